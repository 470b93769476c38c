package modcache

import (
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// modules makes n distinct modules of size bytes each and a fetch serving
// them.
func modules(n, size int) ([]string, map[string][]byte) {
	blobs := map[string][]byte{}
	var ds []string
	for i := range n {
		b := []byte(strings.Repeat(string(rune('a'+i)), size))
		d := digestOf(b)
		blobs[d] = b
		ds = append(ds, d)
	}
	return ds, blobs
}

func onDisk(t *testing.T, c *Cache, d string) bool {
	t.Helper()
	p, _ := c.Path(d)
	_, err := os.Stat(p)
	return err == nil
}

func TestEvictsLeastRecentlyUsedUnpinned(t *testing.T) {
	ds, blobs := modules(4, 100)
	var calls atomic.Int32
	c, err := New(t.TempDir(), serve(blobs, &calls))
	if err != nil {
		t.Fatal(err)
	}
	c.SetLimit(250) // two modules of 100 bytes fit, not three
	ctx := context.Background()
	for _, d := range ds[:2] {
		if _, err := c.Get(ctx, d, 100); err != nil {
			t.Fatal(err)
		}
	}
	// ds[0] used again: ds[1] is now the least recently used.
	if _, err := c.Get(ctx, ds[0], 100); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, ds[2], 100); err != nil {
		t.Fatal(err)
	}
	if onDisk(t, c, ds[1]) || !onDisk(t, c, ds[0]) || !onDisk(t, c, ds[2]) {
		t.Fatalf("after a third module: want ds[1] evicted and ds[0], ds[2] kept; on disk: %v %v %v", onDisk(t, c, ds[0]), onDisk(t, c, ds[1]), onDisk(t, c, ds[2]))
	}
	if u := c.Usage(); u.Bytes != 200 || u.Modules != 2 || u.Evicted != 1 {
		t.Fatalf("usage %+v, want 2 modules, 200 bytes, 1 evicted", u)
	}
	// An evicted module is fetched again when it is wanted.
	before := calls.Load()
	if _, err := c.Get(ctx, ds[1], 100); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != before+1 {
		t.Fatalf("an evicted module was not fetched again")
	}
}

func TestNeverEvictsAPinnedModule(t *testing.T) {
	ds, blobs := modules(4, 100)
	var calls atomic.Int32
	c, err := New(t.TempDir(), serve(blobs, &calls))
	if err != nil {
		t.Fatal(err)
	}
	c.SetLimit(150)
	ctx := context.Background()
	c.Pin(ds[0])
	c.Pin(ds[1])
	for _, d := range ds[:2] {
		if _, err := c.Get(ctx, d, 100); err != nil {
			t.Fatal(err)
		}
	}
	// Both are in use: over the bound, and both kept.
	if !onDisk(t, c, ds[0]) || !onDisk(t, c, ds[1]) {
		t.Fatal("a pinned module was evicted")
	}
	// A third, unpinned, fetched for a moment: it goes, the pinned stay.
	if _, err := c.Get(ctx, ds[2], 100); err != nil {
		t.Fatal(err)
	}
	if !onDisk(t, c, ds[0]) || !onDisk(t, c, ds[1]) || onDisk(t, c, ds[2]) {
		t.Fatalf("on disk: %v %v %v, want the two pinned only", onDisk(t, c, ds[0]), onDisk(t, c, ds[1]), onDisk(t, c, ds[2]))
	}
	// Unpinned, ds[0] can go: the cache comes back under its bound.
	c.Unpin(ds[0])
	if onDisk(t, c, ds[0]) || !onDisk(t, c, ds[1]) {
		t.Fatalf("after unpinning ds[0]: on disk %v %v, want ds[1] only", onDisk(t, c, ds[0]), onDisk(t, c, ds[1]))
	}
	if u := c.Usage(); u.Bytes > 150 || u.Pinned != 1 {
		t.Fatalf("usage %+v, want at most the bound and one pinned", u)
	}
}

func TestRefusesAModuleLargerThanTheBound(t *testing.T) {
	ds, blobs := modules(1, 300)
	var calls atomic.Int32
	dir := t.TempDir()
	c, err := New(dir, serve(blobs, &calls))
	if err != nil {
		t.Fatal(err)
	}
	c.SetLimit(200)
	// Its size known: refused before anything is fetched.
	_, err = c.Get(context.Background(), ds[0], 300)
	var tl *TooLargeError
	if !errors.As(err, &tl) || !errors.Is(err, ErrTooLarge) || tl.Size != 300 || tl.Limit != 200 {
		t.Fatalf("Get = %v, want a TooLargeError of 300 over 200", err)
	}
	if calls.Load() != 0 {
		t.Fatalf("fetched %d times, want none", calls.Load())
	}
	if want := "is 300 bytes, more than this node's module cache holds (200 bytes, agent --module-cache-size)"; !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
	// Its size not known (or wrong): refused as it arrives, nothing left.
	if _, err := c.Get(context.Background(), ds[0], 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Get without a size = %v, want ErrTooLarge", err)
	}
	if left := files(t, dir); len(left) != 0 {
		t.Fatalf("left files behind: %v", left)
	}
}

func TestBoundHoldsAcrossRestart(t *testing.T) {
	ds, blobs := modules(3, 100)
	var calls atomic.Int32
	dir := t.TempDir()
	c, err := New(dir, serve(blobs, &calls))
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		if _, err := c.Get(context.Background(), d, 100); err != nil {
			t.Fatal(err)
		}
		// Distinct modification times: the order a restarted cache reads.
		p, _ := c.Path(d)
		at := time.Now().Add(time.Duration(i-10) * time.Minute)
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
	// Unbounded, all three stay; a cache opened on them with a bound of
	// two keeps the two most recent.
	c2, err := New(dir, serve(blobs, &calls))
	if err != nil {
		t.Fatal(err)
	}
	if u := c2.Usage(); u.Modules != 3 || u.Bytes != 300 {
		t.Fatalf("reopened usage %+v, want the 3 modules left on disk", u)
	}
	c2.SetLimit(200)
	if onDisk(t, c2, ds[0]) || !onDisk(t, c2, ds[1]) || !onDisk(t, c2, ds[2]) {
		t.Fatalf("on disk after SetLimit: %v %v %v, want the oldest gone", onDisk(t, c2, ds[0]), onDisk(t, c2, ds[1]), onDisk(t, c2, ds[2]))
	}
}

func TestTrimDirRemovesOldestFirst(t *testing.T) {
	dir := t.TempDir()
	sub := dir + "/wazero-v1"
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	names := []string{"a", "b", "c", "d.123.tmp"}
	for i, n := range names {
		p := sub + "/" + n
		if err := os.WriteFile(p, make([]byte, 100), 0o644); err != nil {
			t.Fatal(err)
		}
		at := time.Now().Add(time.Duration(i-10) * time.Minute)
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
	n, freed, err := TrimDir(dir, 150)
	if err != nil || n != 2 || freed != 200 {
		t.Fatalf("TrimDir = %d, %d, %v; want the 2 oldest files, 200 bytes", n, freed, err)
	}
	left := files(t, sub)
	if !slices.Equal(left, []string{"c", "d.123.tmp"}) {
		t.Fatalf("left %v, want the newest and the file being written", left)
	}
	if n, _, err := TrimDir(dir+"/missing", 1); n != 0 || err != nil {
		t.Fatalf("TrimDir of a missing dir = %d, %v", n, err)
	}
}

// TestAFetchThatCannotBeginEvictsNothing (edge): a module the cache must
// fetch, when the fetch fails before any byte arrives (a node cut off from
// its control plane), evicts no other module to make room for it.
func TestAFetchThatCannotBeginEvictsNothing(t *testing.T) {
	ds, blobs := modules(2, 100)
	var calls atomic.Int32
	cutOff := false
	fetch := serve(blobs, &calls)
	c, err := New(t.TempDir(), func(ctx context.Context, digest string, w io.Writer) error {
		if cutOff {
			return errors.New("not connected to a control plane")
		}
		return fetch(ctx, digest, w)
	})
	if err != nil {
		t.Fatal(err)
	}
	c.SetLimit(150) // one module
	ctx := context.Background()
	if _, err := c.Get(ctx, ds[0], 100); err != nil {
		t.Fatal(err)
	}
	cutOff = true
	if _, err := c.Get(ctx, ds[1], 100); err == nil {
		t.Fatal("a fetch that cannot begin succeeded")
	}
	if !onDisk(t, c, ds[0]) || c.Usage().Evicted != 0 {
		t.Fatalf("a fetch that could not begin evicted a module: %+v", c.Usage())
	}
	cutOff = false
	if _, err := c.Get(ctx, ds[1], 100); err != nil {
		t.Fatal(err)
	}
	if onDisk(t, c, ds[0]) || !onDisk(t, c, ds[1]) {
		t.Fatalf("a fetch that began did not make room: %+v", c.Usage())
	}
}
