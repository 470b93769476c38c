package wasmrt

import (
	"context"
	"net/http/httptest"
	"os"
	"sync"
	"testing"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// State: a function with scratch space gives each request's sandbox a
// /tmp of its own, within the size: a write past it fails with ENOSPC,
// nothing one request writes is seen by the next or by one running
// beside it, and the directory is gone when the request is.
func TestCGIServeScratchSpacePerRequest(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	dir := t.TempDir()
	fn, err := r.PrepareFunction(context.Background(), testArtifact(t, "scratchfn.wasm"), runtimeapi.FunctionSpec{ScratchBytes: 1 << 20, ScratchDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fn.Close)
	s := &serveTest{t: t, fn: fn}
	get := func(query string) string {
		t.Helper()
		rec, res, logs := s.serve(httptest.NewRequest("GET", "http://example.test/fn?"+query, nil), nil, 0)
		if res.Outcome != runtimeapi.OutcomeOK || rec.Code != 200 {
			t.Fatalf("GET ?%s: %d %+v, logs %q", query, rec.Code, res, logs)
		}
		return rec.Body.String()
	}
	if got := get("100000"); got != "mark: absent\nwrote 100000 bytes\n" {
		t.Errorf("a request within its scratch space answers %q", got)
	}
	if got := get("3000000"); got != "mark: absent\nwrote 1048576 bytes: No space left on device\n" {
		t.Errorf("a request flooding its scratch space answers %q", got)
	}
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			if got := get("700000"); got != "mark: absent\nwrote 700000 bytes\n" {
				t.Errorf("concurrent requests, each within its own size: %q", got)
			}
		})
	}
	wg.Wait()
	if left, err := os.ReadDir(dir); err != nil || len(left) != 0 {
		t.Errorf("the requests' scratch spaces are left: %v, %v", left, err)
	}

	// Without scratch space a function has no /tmp.
	plain := prepareFunction(t, r, "scratchfn.wasm")
	rec, _, _ := plain.serve(httptest.NewRequest("GET", "http://example.test/fn?10", nil), nil, 0)
	if got := rec.Body.String(); got != "mark: absent\nopen /tmp/mark: Capabilities insufficient\n" {
		t.Errorf("a function without scratch space answers %q", got)
	}
}

// A function's files and its scratch space are both there.
func TestCGIServeScratchSpaceBesideFiles(t *testing.T) {
	t.Parallel()
	r := newTestRuntime(t, Config{})
	files := map[string][]byte{"/config/app/GREETING": []byte("hello from a file")}
	fn, err := r.PrepareFunction(context.Background(), testArtifact(t, "catfn.wasm"), runtimeapi.FunctionSpec{Files: files, ScratchBytes: 4096, ScratchDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fn.Close)
	s := &serveTest{t: t, fn: fn}
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/config/app/GREETING", "hello from a file"},
		{"PUT", "/tmp/new", "/tmp/new: written\n"},
		{"PUT", "/config/app/GREETING", "/config/app/GREETING: cannot write\n"},
	} {
		rec, _, _ := s.serve(httptest.NewRequest(tc.method, "http://example.test/fn"+tc.path, nil), nil, 0)
		if rec.Body.String() != tc.body {
			t.Errorf("%s %s = %d %q, want %q", tc.method, tc.path, rec.Code, rec.Body.String(), tc.body)
		}
	}
	if _, err := r.PrepareFunction(context.Background(), testArtifact(t, "catfn.wasm"), runtimeapi.FunctionSpec{ScratchBytes: 4096, ScratchDir: "relative"}); err == nil {
		t.Error("a scratch directory that is not absolute was taken")
	}
}
