package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// envManifest writes a manifest of one workload whose env holds n values
// of 1 KiB, and returns its path.
func envManifest(t *testing.T, n int) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("apiVersion: wasmorch.dev/v1\nkind: Workload\nmetadata: {name: big}\nspec:\n  module: " +
		filepath.Join(repoRoot, "testdata/hello.wasm") + "\n  restart: never\n  env:\n")
	for i := range n {
		fmt.Fprintf(&b, "    V%d: %s\n", i, strings.Repeat("x", 1<<10))
	}
	path := filepath.Join(t.TempDir(), "big.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestOversizedInputIsRefusedForGood: what can never be stored is said to
// be too large, in one line, and nothing is stored. A 1.9 MB env was
// answered "the server is not ready; try again in a moment" and a 10 MB
// one with gRPC's bare size error ([hardening] 24); a manifest whose
// aliases expand it without bound made apply decode gigabytes (23).
func TestOversizedInputIsRefusedForGood(t *testing.T) {
	t.Parallel()
	c := startUp(t)

	r := c.run("apply", "-f", envManifest(t, 1900))
	oneLineError(t, r, "workload/big (line 1): the server refused the request: ")
	if strings.Contains(r.stderr, "try again in a moment") {
		t.Errorf("a spec that can never be stored is reported as transient\n%s", r)
	}
	r = c.run("apply", "-f", envManifest(t, 10<<10))
	oneLineError(t, r, "workload/big (line 1): the spec of workload big is 10.1 MiB, more than the 4 MiB a wasmorch server takes in one request; move long environment values")

	var laughs strings.Builder
	laughs.WriteString("apiVersion: wasmorch.dev/v1\nkind: Workload\nmetadata: {name: lol}\nspec:\n  module: hello.wasm\n  env: {A: &a " + strings.Repeat("x", 64<<10) + "}\n  args: [")
	for i := range 1000 {
		if i > 0 {
			laughs.WriteString(", ")
		}
		laughs.WriteString("*a")
	}
	laughs.WriteString("]\n")
	path := filepath.Join(t.TempDir(), "lol.yaml")
	if err := os.WriteFile(path, []byte(laughs.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	oneLineError(t, c.run("apply", "-f", path), "lol.yaml:1: its aliases expand the manifest by more than 16 MiB when decoded")

	if ws := c.workloads(); len(ws) != 0 {
		t.Fatalf("oversized input stored workloads: %s", toJSON(ws))
	}
}

// TestAnUploadOverTheLimitIsRefused: a module over the server's
// --max-upload-size is refused in one line naming both sizes, and
// nothing is stored ([hardening] 22).
func TestAnUploadOverTheLimitIsRefused(t *testing.T) {
	t.Parallel()
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t), "--max-upload-size", "1Mi")
	oneLineError(t, c.run("deploy", "testdata/gohello.wasm", "--name", "big"),
		"the server refused the request: the upload is 2.5 MiB, more than the 1.0 MiB this server takes (its --max-upload-size)")
	c.mustRun("deploy", "testdata/hello.wasm", "--name", "small", "--restart", "never")
	if ws := c.workloads(); len(ws) != 1 || ws[0].Name != "small" {
		t.Fatalf("workloads = %s, want only the small one", toJSON(ws))
	}
}
