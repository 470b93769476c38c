package controlplane_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/wasmorch/wasmorch/controlplane"
	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// bigArchive is an OCI image archive of about size bytes (one layer of
// random bytes).
func bigArchive(t *testing.T, size int) []byte {
	t.Helper()
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := ociarchive.Write(&buf, ociarchive.Image{Files: []ociarchive.File{{Path: "/data", Mode: 0o644, Data: data}}, Entrypoint: []string{"/data"}}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// sending is an upload in progress: its header and some of its chunks
// sent.
type sending struct {
	stream v1.Control_UploadBlobClient
	b      []byte
	off    int
	cut    bool // a Send found the stream ended by the server
}

func startUpload(t *testing.T, c v1.ControlClient, b []byte, hdr *v1.UploadHeader) *sending {
	t.Helper()
	stream, err := c.UploadBlob(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Header{Header: hdr}}); err != nil {
		t.Fatal(err)
	}
	return &sending{stream: stream, b: b}
}

// send sends the next n bytes in chunks of 1 MiB, and stops early if the
// server has ended the stream.
func (s *sending) send(n int) error {
	for end := min(s.off+n, len(s.b)); s.off < end && !s.cut; {
		next := min(s.off+1<<20, end)
		if err := s.stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Chunk{Chunk: s.b[s.off:next]}}); errors.Is(err, io.EOF) {
			s.cut = true
		} else if err != nil {
			return err
		}
		s.off = next
	}
	return nil
}

func (s *sending) finish() (*v1.UploadResponse, error) {
	if err := s.send(len(s.b)); err != nil {
		return nil, err
	}
	resp, err := s.stream.CloseAndRecv()
	return resp, errdefs.FromGRPC(err)
}

func header(b []byte) *v1.UploadHeader {
	return &v1.UploadHeader{Digest: blobs.Digest(b), Size: int64(len(b)), MediaType: ociarchive.MediaType}
}

// liveHeap is the heap the member still references (after a GC): what an
// upload holds, which is what this test bounds. It is a floor, not what an
// operator reads (VmRSS, no forced GC): the figures in BENCHMARKS.md are
// read that way instead.
func liveHeap() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// TestAnUploadIsNotHeldInMemory: while a 64 MiB archive streams in, the
// member's heap does not hold it (the whole upload was read into memory,
// and one 250 MiB module took a member to 3.1 GiB).
func TestAnUploadIsNotHeldInMemory(t *testing.T) {
	c := startCluster(t, t.TempDir())
	archive := bigArchive(t, 64<<20)
	before := liveHeap()
	up := startUpload(t, c.control, archive, header(archive))
	if err := up.send(len(archive)); err != nil {
		t.Fatal(err)
	}
	// Every chunk is sent: gRPC's flow control lets the client be at
	// most a window (16 MiB at most) ahead of what the member has read.
	during := liveHeap()
	resp, err := up.finish()
	if err != nil || resp.GetExisted() || resp.GetSize() != int64(len(archive)) {
		t.Fatalf("upload = %v, %v", resp, err)
	}
	if grew := int64(during) - int64(before); grew > 32<<20 {
		t.Fatalf("the member's live heap grew by %d MiB while a %d MiB upload streamed in", grew>>20, len(archive)>>20)
	}
	t.Logf("live heap grew by %.1f MiB while a %d MiB upload streamed in", float64(int64(during)-int64(before))/(1<<20), len(archive)>>20)
}

// TestUploadsOfOneBlobAreStoredOnce: uploads of bytes the member already
// holds, or is receiving, are answered without their bytes being read:
// twenty concurrent uploads of one 100 MiB module took a member past
// 4 GiB.
func TestUploadsOfOneBlobAreStoredOnce(t *testing.T) {
	c := startCluster(t, t.TempDir())
	archive := bigArchive(t, 32<<20)
	first := startUpload(t, c.control, archive, header(archive))
	if err := first.send(len(archive) / 2); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	results := make([]struct {
		resp *v1.UploadResponse
		err  error
		sent int
	}, 3)
	for i := range results {
		wg.Go(func() {
			up := startUpload(t, c.control, archive, header(archive))
			results[i].resp, results[i].err = up.finish()
			results[i].sent = up.off
			if !up.cut {
				results[i].sent = -1
			}
		})
	}
	eventually(t, "three uploads wait for the first", func() (bool, string) {
		n := controlplane.UploadWaiters(c.srv, blobs.Digest(archive))
		return n == 3, fmt.Sprintf("%d waiting", n)
	})
	resp, err := first.finish()
	if err != nil || resp.GetExisted() {
		t.Fatalf("first upload = %v, %v; want it stored", resp, err)
	}
	wg.Wait()
	for i, r := range results {
		if r.err != nil || !r.resp.GetExisted() {
			t.Errorf("upload %d = %v, %v; want the blob found stored", i, r.resp, r.err)
		}
		if r.sent < 0 {
			t.Errorf("upload %d sent all of its %d MiB: the member read an upload of a blob it held", i, len(archive)>>20)
		}
	}
	// And once stored, an upload is answered from its header.
	again := startUpload(t, c.control, archive, header(archive))
	if resp, err := again.finish(); err != nil || !resp.GetExisted() || !again.cut {
		t.Fatalf("upload of a stored blob = %v, %v, cut short: %v", resp, err, again.cut)
	}
}

// TestUploadLimits: an upload over --max-upload-size is refused from its
// header, one that sends more than its header said as soon as it does,
// both without the rest of their bytes being read.
func TestUploadLimits(t *testing.T) {
	c := startClusterWith(t, t.TempDir(), func(cfg *controlplane.Config) { cfg.MaxUploadBytes = 4 << 20 })
	archive := bigArchive(t, 64<<20)

	up := startUpload(t, c.control, archive, header(archive))
	_, err := up.finish()
	want := "the upload is 64.0 MiB, more than the 4.0 MiB this server takes (its --max-upload-size)"
	if !errdefs.IsInvalidArgument(err) || err.Error() != want {
		t.Fatalf("upload over the limit = %v, want InvalidArgument %q", err, want)
	}
	if !up.cut {
		t.Errorf("the member read all of an upload it refused from its header")
	}

	lying := header(archive)
	lying.Size = 1 << 20
	up = startUpload(t, c.control, archive, lying)
	_, err = up.finish()
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "the upload sent more than the 1048576 bytes its header announced") {
		t.Fatalf("upload over its announced size = %v", err)
	}
	if !up.cut {
		t.Errorf("the member read all of an upload longer than it announced")
	}

	small := bigArchive(t, 1<<20)
	if resp, err := startUpload(t, c.control, small, header(small)).finish(); err != nil || resp.GetExisted() {
		t.Fatalf("upload under the limit = %v, %v", resp, err)
	}
}
