package modcache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func serve(blobs map[string][]byte, calls *atomic.Int32) Fetch {
	return func(_ context.Context, digest string, w io.Writer) error {
		calls.Add(1)
		b, ok := blobs[digest]
		if !ok {
			return errdefs.NotFoundf("blob %s", digest)
		}
		_, err := w.Write(b)
		return err
	}
}

func files(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestFetchesOnceAndServesFromDisk(t *testing.T) {
	module := []byte("\x00asm\x01\x00\x00\x00")
	d := digestOf(module)
	var calls atomic.Int32
	c, err := New(t.TempDir(), serve(map[string][]byte{d: module}, &calls))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	paths := make([]string, 16)
	errs := make([]error, 16)
	for i := range paths {
		wg.Go(func() { paths[i], errs[i] = c.Get(context.Background(), d, 0) })
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if paths[i] != paths[0] {
			t.Fatalf("paths differ: %s, %s", paths[i], paths[0])
		}
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("fetched %d times, want 1", n)
	}
	got, err := os.ReadFile(paths[0])
	if err != nil || string(got) != string(module) {
		t.Fatalf("cached bytes %q, %v", got, err)
	}
	if want := filepath.Join(c.dir, d[len("sha256:"):]+".wasm"); paths[0] != want {
		t.Fatalf("path %s, want %s", paths[0], want)
	}
}

func TestCorruptBlobIsRejectedAndNotCached(t *testing.T) {
	d := digestOf([]byte("the real module"))
	var calls atomic.Int32
	dir := t.TempDir()
	c, err := New(dir, serve(map[string][]byte{d: []byte("tampered bytes")}, &calls))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := c.Get(context.Background(), d, 0); !errors.Is(err, ErrDigestMismatch) {
			t.Fatalf("Get = %v, want ErrDigestMismatch", err)
		}
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("fetched %d times, want 2 (a failure is not cached)", n)
	}
	if left := files(t, dir); len(left) != 0 {
		t.Fatalf("left files behind: %v", left)
	}
}

func TestFileCorruptedOnDiskIsFetchedAgain(t *testing.T) {
	module := []byte("module bytes")
	d := digestOf(module)
	dir := t.TempDir()
	var calls atomic.Int32
	c, err := New(dir, serve(map[string][]byte{d: module}, &calls))
	if err != nil {
		t.Fatal(err)
	}
	path, _ := c.Path(d)
	if err := os.WriteFile(path, []byte("bit rot"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(context.Background(), d, 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != string(module) || calls.Load() != 1 {
		t.Fatalf("after refetch: %q, %d fetches", got, calls.Load())
	}
}

func TestInvalidDigestIsAnInvalidArgument(t *testing.T) {
	c, err := New(t.TempDir(), func(context.Context, string, io.Writer) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"", "sha256:abc", "md5:" + digestOf(nil)[7:], "sha256:" + digestOf(nil)[7:70] + "Z", "sha256:../../../../etc/passwd"} {
		if _, err := c.Get(context.Background(), d, 0); !errdefs.IsInvalidArgument(err) {
			t.Errorf("Get(%q) = %v, want an invalid argument", d, err)
		}
	}
}

func TestLeftoverTempFilesAreRemoved(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "abc.123.tmp")
	if err := os.WriteFile(stale, []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(dir, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatalf("stale temp file still there: %v", err)
	}
}
