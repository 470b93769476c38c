package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/registry"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Registries (docs/registry.md): the control plane pulls what an oci://
// reference names and stores it in the blob store, as an upload would be
// stored, so that nodes fetch it by digest from the control plane like
// any module: they need no registry credentials, pull nothing while the
// registry is down, and a tag moved later changes nothing that was
// deployed. A Wasm module is stored as itself (its layer's digest is the
// module's); a container image is stored as an OCI image layout archive.

// PullReference resolves req's reference in its registry and stores what
// it names.
func (a *controlAPI) PullReference(ctx context.Context, req *v1.PullReferenceRequest) (*v1.PullReferenceResponse, error) {
	text := req.GetReference()
	if !registry.IsReference(text) {
		return nil, errdefs.Invalidf("%q is not a registry reference: use oci://REGISTRY/REPO:TAG or oci://REGISTRY/REPO@sha256:...", text)
	}
	ref, err := registry.Parse(text, false)
	if err != nil {
		return nil, errdefs.Invalidf("%v", err)
	}
	host := ref.Context().RegistryStr()
	settings, err := a.s.registrySettings(ctx, host)
	if err != nil {
		return nil, err
	}
	if settings.PlainHTTP {
		if ref, err = registry.Parse(text, true); err != nil {
			return nil, errdefs.Invalidf("%v", err)
		}
	}
	explain := func(err error) error { return registry.Explain(text, host, settings, registry.PullFix(host), err) }
	art, err := registry.Resolve(ctx, ref, settings, registry.DefaultPlatform())
	if err != nil {
		return nil, explain(err)
	}
	resp := &v1.PullReferenceResponse{Reference: text, Digest: art.Digest, Kind: art.Kind}
	switch art.Kind {
	case registry.KindWasm:
		resp.BlobDigest, resp.BlobSize = art.ModuleDigest, art.ModuleSize
		resp.Existed, err = a.pullModule(ctx, art)
	default:
		resp.BlobDigest, resp.BlobSize, resp.Existed, err = a.pullImage(ctx, text, art)
	}
	if err != nil {
		return nil, explain(err)
	}
	return resp, nil
}

// registrySettings reads what 'wasmorch registry login' stored for host;
// none means anonymous HTTPS with the system's CAs.
func (s *Server) registrySettings(ctx context.Context, host string) (registry.Settings, error) {
	rec, err := s.store.Secrets.Get(ctx, registry.SecretName(host))
	if errdefs.IsNotFound(err) {
		return registry.Settings{}, nil
	}
	if err != nil {
		return registry.Settings{}, err
	}
	data, err := s.secrets.Open(ctx, rec.Value)
	if err != nil {
		return registry.Settings{}, err
	}
	st, err := registry.FromData(host, data)
	if err != nil {
		return registry.Settings{}, errdefs.Preconditionf("%v", err)
	}
	return st, nil
}

// pullModule stores a Wasm artifact's module, unless it is stored
// already: read from the registry into a spool file while hashed, checked
// against the manifest's digest and validated as an upload is.
func (a *controlAPI) pullModule(ctx context.Context, art *registry.Artifact) (bool, error) {
	digest, size := art.ModuleDigest, art.ModuleSize
	if _, err := blobs.ParseDigest(digest); err != nil {
		return false, errdefs.Invalidf("its module's digest: %v; push the module with 'wasmorch push'", err)
	}
	if size > a.s.maxUpload {
		return false, errdefs.Invalidf("its module is %s, more than the %s this server takes; raise the server's --max-upload-size", mib(size), mib(a.s.maxUpload))
	}
	release, err := a.s.uploads.acquire(ctx, digest)
	if err != nil {
		return false, err
	}
	defer release()
	existed, err := a.s.blobs.Touch(ctx, digest)
	if err != nil || existed {
		return existed, err
	}
	f, err := a.spool()
	if err != nil {
		return false, err
	}
	defer f.Close()
	rc, err := art.Module.Compressed()
	if err != nil {
		return false, err
	}
	defer rc.Close()
	sum := sha256.New()
	got, err := io.Copy(io.MultiWriter(f, sum), io.LimitReader(rc, size+1))
	if mismatch := checkDigest(digest, size, got, sum); mismatch != nil {
		// go-containerregistry fails a layer that does not match its
		// digest at its end; this says so plainly.
		return false, mismatch
	}
	if err != nil {
		return false, err
	}
	meta, err := a.inspect(ctx, f, size, "application/wasm")
	if err != nil {
		return false, errdefs.Invalidf("%v; push a valid WASI command module", err)
	}
	_, err = a.s.blobs.Put(ctx, digest, f, size, meta)
	return false, err
}

// checkDigest says whether the got bytes hashed by sum are the size bytes
// of digest.
func checkDigest(digest string, size, got int64, sum hash.Hash) error {
	switch {
	case got > size:
		return errdefs.Invalidf("digest mismatch: the registry sent more than the %d bytes the manifest gives %s; its copy is damaged or was changed: push it again", size, digest)
	case got < size:
		return nil // an error cut it short: that error says why
	}
	if h := "sha256:" + hex.EncodeToString(sum.Sum(nil)); h != digest {
		return errdefs.Invalidf("digest mismatch: the manifest names %s, the registry sent bytes that hash to %s; its copy is damaged or was changed: push it again", digest, h)
	}
	return nil
}

// pullImage stores a container image as an OCI image layout archive (the
// same image always makes the same archive), unless it is stored already.
func (a *controlAPI) pullImage(ctx context.Context, text string, art *registry.Artifact) (string, int64, bool, error) {
	f, err := a.spool()
	if err != nil {
		return "", 0, false, err
	}
	defer f.Close()
	sum := sha256.New()
	w := &cappedWriter{w: io.MultiWriter(f, sum), left: a.s.maxUpload}
	if err := ociarchive.FromImage(w, art.Image); err != nil {
		if errors.Is(err, errTooLarge) {
			return "", 0, false, errdefs.Invalidf("its image is more than the %s this server takes (its --max-upload-size); deploy it with --image %s, which each node pulls", mib(a.s.maxUpload), text[len(registry.Scheme):])
		}
		return "", 0, false, err
	}
	digest, size := "sha256:"+hex.EncodeToString(sum.Sum(nil)), a.s.maxUpload-w.left
	release, err := a.s.uploads.acquire(ctx, digest)
	if err != nil {
		return "", 0, false, err
	}
	defer release()
	existed, err := a.s.blobs.Touch(ctx, digest)
	if err != nil || existed {
		return digest, size, existed, err
	}
	meta, err := a.inspect(ctx, f, size, ociarchive.MediaType)
	if err != nil {
		return "", 0, false, err
	}
	_, err = a.s.blobs.Put(ctx, digest, f, size, meta)
	return digest, size, false, err
}

// spool is a file for a blob being received, unlinked at once so that
// nothing is left behind whatever happens.
func (a *controlAPI) spool() (*os.File, error) {
	f, err := os.CreateTemp(a.s.uploadDir, "pull-*")
	if err != nil {
		return nil, fmt.Errorf("spool the pull: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool the pull: %w", err)
	}
	return f, nil
}

var errTooLarge = errors.New("over the size limit")

// cappedWriter fails once more than left bytes are written.
type cappedWriter struct {
	w    io.Writer
	left int64
}

func (c *cappedWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		return 0, errTooLarge
	}
	n, err := c.w.Write(p)
	c.left -= int64(n)
	return n, err
}
