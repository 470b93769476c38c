package cliclient

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/internal/manifest"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Container deploys: `deploy IMAGE-oci.tar` uploads an OCI image archive
// (told from a module by its content: a tar) and `deploy --image REF`
// names an image each node pulls; both make a workload of kind container.

const kindContainer = "container"

// defaultName is the workload name when --name is not given: the file's
// base name without .wasm, .tar or -oci, or the image's last path element
// without its tag or digest.
func (cfg DeployConfig) defaultName() string {
	if ref := cfg.reference(); ref != "" || cfg.File == "" && cfg.Image != "" {
		name := strings.TrimPrefix(cmp.Or(ref, cfg.Image), "oci://")
		if i := strings.LastIndexByte(name, '/'); i >= 0 {
			name = name[i+1:]
		}
		name, _, _ = strings.Cut(name, "@")
		name, _, _ = strings.Cut(name, ":")
		return name
	}
	name := NameFromFile(cfg.File)
	if base := strings.TrimSuffix(name, ".tar"); base != name {
		name = strings.TrimSuffix(base, "-oci")
	}
	return name
}

// readSource reads what the workload runs and completes spec with it: a
// module, an OCI image archive, or an image reference (nothing to
// upload). It returns the bytes to upload and their media type.
func readSource(ctx context.Context, cfg DeployConfig, spec *wasmorchv1.WorkloadSpec) ([]byte, string, error) {
	if cfg.Image != "" {
		if cfg.File != "" {
			return nil, "", Errorf("drop the file to run the image, or drop --image", "deploy takes a file or --image %s, not both", cfg.Image)
		}
		spec.Kind, spec.Image = kindContainer, cfg.Image
		return nil, "", nil
	}
	if manifest.IsDigest(cfg.File) {
		if _, err := os.Stat(cfg.File); err != nil {
			// A blob the cluster holds already: nothing to upload.
			spec.ModuleDigest = cfg.File
			if cfg.Runtime == kindContainer {
				spec.Kind = kindContainer
			}
			return nil, "", nil
		}
	}
	archive, err := isArchive(cfg.File)
	if err != nil {
		return nil, "", err
	}
	var b []byte
	media := mediaTypeWasm
	if archive {
		if b, err = readArchive(cfg.File); err != nil {
			return nil, "", err
		}
		spec.Kind, media = kindContainer, ociarchive.MediaType
	} else if b, err = readModule(ctx, cfg.File, cfg.FallbackImage != ""); err != nil {
		return nil, "", err
	} else if err := checkServiceModule(cfg, b); err != nil { // service.go
		return nil, "", err
	}
	sum := sha256.Sum256(b)
	spec.ModuleDigest = "sha256:" + hex.EncodeToString(sum[:])
	spec.ModuleSize = int64(len(b))
	return b, media, nil
}

// isArchive reports whether path starts like a tar archive.
func isArchive(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, readError(path, err)
	}
	defer f.Close()
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return false, readError(path, err)
	}
	return ociarchive.LooksLike(head[:n]), nil
}

// readArchive reads an OCI image archive and checks it is complete, so
// that a corrupt one is refused before anything is sent. An archive in
// Docker's own format ('docker save' before Docker 25) is converted to an
// OCI image layout archive first: that is what is uploaded.
func readArchive(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, readError(path, err)
	}
	_, err = ociarchive.Inspect(b)
	if errors.Is(err, ociarchive.ErrDockerArchive) {
		var oci bytes.Buffer
		if err := ociarchive.FromDocker(&oci, func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }); err != nil {
			return nil, &Error{
				What:  fmt.Sprintf("%s is a Docker image archive that cannot be converted to an OCI image archive: %s", filepath.Base(path), OneLine(err.Error())),
				Hint:  "save one image with 'docker save IMAGE -o FILE.tar', or use 'skopeo copy docker-archive:FILE.tar oci-archive:OCI.tar'",
				Cause: err,
			}
		}
		b = oci.Bytes()
		_, err = ociarchive.Inspect(b)
	}
	if err != nil {
		return nil, &Error{
			What:  fmt.Sprintf("%s is not a valid OCI image archive: %s", filepath.Base(path), OneLine(err.Error())),
			Hint:  "save the image with 'docker save IMAGE -o FILE.tar' or 'skopeo copy docker://IMAGE oci-archive:FILE.tar'",
			Cause: err,
		}
	}
	return b, nil
}

func readError(path string, err error) error {
	hint := "check the path"
	if errors.Is(err, fs.ErrPermission) {
		hint = "check the file's permissions"
	}
	why := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		why = pe.Err.Error()
	}
	return &Error{What: fmt.Sprintf("cannot read %s: %s", path, why), Hint: hint, Cause: err}
}
