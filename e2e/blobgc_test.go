package e2e

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// moduleDigest is the digest wasmorch names a testdata module by.
func moduleDigest(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, path))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// metric reads one unlabelled metric from the member's /metrics (-1 when
// it is not there yet).
func (c *cluster) metric(name string) float64 {
	c.t.Helper()
	resp, err := http.Get("http://" + c.metrics + "/metrics")
	if err != nil {
		c.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("GET /metrics: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				c.t.Fatalf("metric line %q: %v", line, err)
			}
			return f
		}
	}
	return -1
}

// collectedBlobs are the digests up's log says the collector deleted.
func (c *cluster) collectedBlobs() map[string]bool {
	c.t.Helper()
	f, err := os.Open(c.log)
	if err != nil {
		c.t.Fatal(err)
	}
	defer f.Close()
	out := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `msg="collected an unreferenced blob"`) {
			continue
		}
		for _, field := range strings.Fields(line) {
			if d, ok := strings.CutPrefix(field, "digest="); ok {
				out[d] = true
			}
		}
	}
	return out
}

// TestBlobGCDeletesModulesOfDroppedRevisions: with a history of 2, the
// module of a function's first generation is deleted from the control
// plane once its revision is dropped (and its instances are gone); the
// modules of the kept revisions stay, so rolling back to one works, and
// the dropped module deploys again by uploading it again.
func TestBlobGCDeletesModulesOfDroppedRevisions(t *testing.T) {
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t),
		"--revision-history-limit", "2", "--blob-gc-interval", "100ms", "--blob-gc-grace", "1s")
	greet, echo, counter := moduleDigest(t, "testdata/greet.wasm"), moduleDigest(t, "testdata/echo.wasm"), moduleDigest(t, "testdata/counter.wasm")
	c.deployFunction("testdata/greet.wasm", "fn", "/fn")
	c.deployFunction("testdata/echo.wasm", "fn", "/fn")
	c.deployFunction("testdata/counter.wasm", "fn", "/fn") // revision 1 (greet) is dropped

	eventually(t, "the first generation's module is collected", func() (bool, string) {
		got := c.collectedBlobs()
		return got[greet], toJSON(got)
	})
	if n := c.metric("wasmorch_blobs_collected_total"); n != 1 {
		t.Fatalf("wasmorch_blobs_collected_total = %v, want 1", n)
	}
	// Passes enough to outlast the grace period many times over; the
	// kept revisions' modules must survive all of them.
	passes := c.metric("wasmorch_blob_gc_passes_total")
	eventually(t, "more collector passes", func() (bool, string) {
		now := c.metric("wasmorch_blob_gc_passes_total")
		return now >= passes+30, strconv.FormatFloat(now, 'f', -1, 64)
	})
	if got := c.collectedBlobs(); got[echo] || got[counter] || len(got) != 1 {
		t.Fatalf("collected %v; want only the first generation's module %s", toJSON(got), greet)
	}
	if n := c.metric("wasmorch_blobs_stored"); n != 2 {
		t.Fatalf("wasmorch_blobs_stored = %v, want 2 (the modules of revisions 2 and 3)", n)
	}

	oneLineError(t, c.run("rollout", "undo", "fn", "--to-revision", "1"), "no revision 1")
	c.mustRun("rollout", "undo", "fn", "--to-revision", "2")
	eventually(t, "the rolled-back function (echo) answers", func() (bool, string) {
		r := c.call(request{method: http.MethodPost, path: "/fn", body: strings.NewReader("ping")})
		return r.status == http.StatusOK && r.body == "ping", toJSON(r.status) + " " + r.body
	})

	c.deployFunction("testdata/greet.wasm", "fn", "/fn")
	eventually(t, "the module deployed again answers", func() (bool, string) {
		r := c.call(request{path: "/fn"})
		return r.status == http.StatusOK && strings.Contains(r.body, "hello, world!"), toJSON(r.status) + " " + r.body
	})
}
