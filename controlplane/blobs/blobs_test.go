package blobs

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/etcdtest"
)

// TestPutStreamsChunksAndChecksTheDigest: a blob of several chunks is
// stored from a reader and read back whole; bytes that do not hash to the
// digest are refused without metadata, so no reader ever sees them.
func TestPutStreamsChunksAndChecksTheDigest(t *testing.T) {
	s := New(etcdtest.Start(t))
	ctx := context.Background()
	b := bytes.Repeat([]byte("wasmorch"), (2*ChunkSize+100)/8)
	d := Digest(b)
	existed, err := s.Put(ctx, d, bytes.NewReader(b), int64(len(b)), Meta{MediaType: "application/wasm"})
	if err != nil || existed {
		t.Fatalf("Put = %v, %v", existed, err)
	}
	meta, err := s.Stat(ctx, d)
	if err != nil || meta.GetChunks() != 3 || meta.GetSize() != int64(len(b)) || meta.GetMediaType() != "application/wasm" {
		t.Fatalf("Stat = %v, %v", meta, err)
	}
	if got, err := s.Read(ctx, d); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("Read = %d bytes, %v", len(got), err)
	}
	if existed, err := s.Put(ctx, d, bytes.NewReader(b), int64(len(b)), Meta{MediaType: "application/wasm"}); err != nil || !existed {
		t.Fatalf("Put again = %v, %v; want it found", existed, err)
	}

	other := Digest([]byte("other"))
	_, err = s.Put(ctx, other, bytes.NewReader(b), int64(len(b)), Meta{})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "digest mismatch") {
		t.Fatalf("Put of bytes that do not hash to the digest = %v", err)
	}
	if _, err := s.Stat(ctx, other); !errdefs.IsNotFound(err) {
		t.Fatalf("Stat after a refused Put = %v, want NotFound", err)
	}

	empty := Digest(nil)
	if _, err := s.Put(ctx, empty, bytes.NewReader(nil), 0, Meta{}); err != nil {
		t.Fatalf("Put of an empty blob = %v", err)
	}
	if got, err := s.Read(ctx, empty); err != nil || len(got) != 0 {
		t.Fatalf("Read of an empty blob = %q, %v", got, err)
	}
}
