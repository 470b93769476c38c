package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// An upload is streamed to a file (unlinked at once, so that nothing is
// left behind whatever happens) while it is hashed, checked from that
// file, and streamed from it into etcd a chunk at a time: what a member
// holds in memory does not grow with the blob, except while wazero
// validates a module, which Config.MaxUploadBytes bounds and
// maxInspections serializes. A blob already stored is answered at once,
// without reading the rest of the stream; uploads of one digest to one
// member run one after the other, the later ones finding it stored.

// maxInspections is how many uploads are checked at once (a module is
// compiled, an archive read through).
const maxInspections = 2

// uploadLocks makes the uploads of one digest to this member wait for
// each other.
type uploadLocks struct {
	mu      sync.Mutex
	running map[string]*uploadLock
}

type uploadLock struct {
	done    chan struct{} // closed when the running upload ends
	waiting int
}

// acquire waits until no other upload of digest runs here, or ctx ends,
// and returns the function that lets the next one go.
func (u *uploadLocks) acquire(ctx context.Context, digest string) (func(), error) {
	for {
		u.mu.Lock()
		if u.running == nil {
			u.running = map[string]*uploadLock{}
		}
		l, busy := u.running[digest]
		if !busy {
			l = &uploadLock{done: make(chan struct{})}
			u.running[digest] = l
			u.mu.Unlock()
			return func() {
				u.mu.Lock()
				delete(u.running, digest)
				u.mu.Unlock()
				close(l.done)
			}, nil
		}
		l.waiting++
		u.mu.Unlock()
		select {
		case <-l.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// UploadWaiters is how many uploads of digest wait on this member for
// the one it is receiving: tests line uploads up behind each other.
func (s *Server) UploadWaiters(digest string) int { return s.uploads.waiters(digest) }

func (u *uploadLocks) waiters(digest string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	if l, ok := u.running[digest]; ok {
		return l.waiting
	}
	return 0
}

// UploadBlob receives a module or an image archive as a client stream:
// a header naming its digest, size and media type, then its bytes.
func (a *controlAPI) UploadBlob(stream v1.Control_UploadBlobServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return errdefs.Invalidf("upload must start with a header naming the digest and size")
	}
	digest := hdr.GetDigest()
	if _, err := blobs.ParseDigest(digest); err != nil {
		return err
	}
	if limit := a.s.maxUpload; hdr.GetSize() > limit {
		return errdefs.Invalidf("the upload is %s, more than the %s this server takes (its --max-upload-size)", mib(hdr.GetSize()), mib(limit))
	} else if hdr.GetSize() < 0 {
		return errdefs.Invalidf("upload size %d is negative", hdr.GetSize())
	}
	media := hdr.GetMediaType()
	if media == "" {
		media = "application/wasm"
	}
	if media != "application/wasm" && media != ociarchive.MediaType {
		return errdefs.Invalidf("media type %q is not supported: upload application/wasm modules or %s image archives", media, ociarchive.MediaType)
	}
	release, err := a.s.uploads.acquire(ctx, digest)
	if err != nil {
		return err
	}
	defer release()
	existed, err := a.s.blobs.Touch(ctx, digest)
	if err != nil {
		return err
	}
	if !existed {
		if err := a.receive(ctx, stream, digest, hdr.GetSize(), media); err != nil {
			return err
		}
	}
	return stream.SendAndClose(&v1.UploadResponse{Digest: digest, Size: hdr.GetSize(), Existed: existed})
}

// receive spools the upload's bytes, checks them and stores them.
func (a *controlAPI) receive(ctx context.Context, stream v1.Control_UploadBlobServer, digest string, size int64, media string) error {
	f, err := os.CreateTemp(a.s.uploadDir, "upload-*")
	if err != nil {
		return fmt.Errorf("spool the upload: %w", err)
	}
	defer f.Close()
	if err := os.Remove(f.Name()); err != nil {
		return fmt.Errorf("spool the upload: %w", err)
	}
	sum := sha256.New()
	var got int64
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if m.GetHeader() != nil {
			return errdefs.Invalidf("upload sent a second header")
		}
		chunk := m.GetChunk()
		if got+int64(len(chunk)) > size {
			return errdefs.Invalidf("the upload sent more than the %d bytes its header announced", size)
		}
		if _, err := f.Write(chunk); err != nil {
			return fmt.Errorf("spool the upload: %w", err)
		}
		sum.Write(chunk)
		got += int64(len(chunk))
	}
	if got != size {
		return errdefs.Invalidf("upload truncated: its header announced %d bytes, %d came", size, got)
	}
	if h := "sha256:" + hex.EncodeToString(sum.Sum(nil)); h != digest {
		return errdefs.Invalidf("digest mismatch: expected %s, the uploaded bytes hash to %s", digest, h)
	}
	meta, err := a.inspect(ctx, f, size, media)
	if err != nil {
		return err
	}
	_, err = a.s.blobs.Put(ctx, digest, f, size, meta)
	return err
}

// inspect checks the spooled upload: a module is validated (and its
// needs read), an image archive read through.
func (a *controlAPI) inspect(ctx context.Context, f *os.File, size int64, media string) (blobs.Meta, error) {
	select {
	case a.s.inspections <- struct{}{}:
		defer func() { <-a.s.inspections }()
	case <-ctx.Done():
		return blobs.Meta{}, ctx.Err()
	}
	meta := blobs.Meta{MediaType: media}
	if media == ociarchive.MediaType {
		if _, err := ociarchive.InspectAt(f, size); err != nil {
			return meta, errdefs.Invalidf("invalid OCI image archive: %v", err)
		}
		return meta, nil
	}
	wasm, unmap, err := mapFile(f, size)
	if err != nil {
		return meta, err
	}
	defer unmap()
	info, err := inspectModule(ctx, wasm)
	meta.WasmMinMemoryBytes, meta.WasmUnsupported = info.minMemoryBytes, info.unsupported
	meta.ImportsRead, meta.WasmAcceptsConnections = info.importsRead, info.accepts
	return meta, err
}

// mapFile maps the spooled module read-only: wazero needs it whole, and
// mapped it is the page cache's, not the heap's. wazero copies what it
// keeps of a module, and inspectModule closes it before unmap.
func mapFile(f *os.File, size int64) ([]byte, func(), error) {
	if size == 0 {
		return nil, func() {}, nil
	}
	b, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, nil, fmt.Errorf("map the spooled upload: %w", err)
	}
	return b, func() { _ = syscall.Munmap(b) }, nil
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
