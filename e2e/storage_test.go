package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// State (issue 14), with the built binary, as docs/storage.md shows it:
// --scratch gives each instance a writable /tmp of its size, a flood of it
// stops there with ENOSPC while a neighbour keeps running, it goes with
// the instance, and sizes that cannot be served are refused in one line
// before anything is stored.
func TestScratchSpace(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	c := startUpAt(t, dataDir, freeAddr(t), freeAddr(t), "--max-scratch", "16Mi")

	oneLineError(t, c.run("deploy", "testdata/scratch.wasm", "--name", "big", "--scratch", "32Mi"),
		"scratch space of 32Mi is more than any node allows one instance (at most 16Mi: agent|up --max-scratch)")
	oneLineError(t, c.run("deploy", "testdata/scratch.wasm", "--name", "big", "--scratch", "lots"), `invalid --scratch: "lots" is not a size`)
	oneLineError(t, c.run("deploy", "--image", "team/app:1", "--name", "big", "--scratch", "1Mi"), "scratch space is for wasm workloads")
	if ws := c.workloads(); len(ws) != 0 {
		t.Fatalf("refused deploys stored workloads: %v", toJSON(ws))
	}

	c.mustRun("deploy", "testdata/scratch.wasm", "--name", "flood", "--scratch", "1Mi")
	manifest := filepath.Join(t.TempDir(), "calm.yaml")
	if err := os.WriteFile(manifest, []byte("apiVersion: wasmorch.dev/v1\nkind: Workload\nmetadata: {name: calm}\nspec:\n  module: "+
		filepath.Join(repoRoot, "testdata/scratch.wasm")+"\n  scratch: 2Mi\n  args: [\"1500000\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.mustRun("apply", "-f", manifest)
	eventually(t, "the flood to stop at its limit and the neighbour to write its share", func() (bool, string) {
		flood, calm := c.run("logs", "flood").stdout, c.run("logs", "calm").stdout
		return strings.Contains(flood, "wrote 1048576 bytes to /tmp/fill: No space left on device\nalive 1\n") &&
			strings.Contains(calm, "wrote 1500000 bytes to /tmp/fill\nalive 1\n"), flood + " | " + calm
	})
	for _, w := range []string{"flood", "calm"} {
		if is := c.instances(w); len(is) != 1 || is[0].State != "Running" {
			t.Fatalf("%s: %v, want one Running instance", w, toJSON(is))
		}
	}
	if !strings.Contains(c.mustRun("get", "workload", "calm", "-o", "yaml").stdout, "scratch: 2Mi") {
		t.Errorf("get -o yaml does not show the scratch space")
	}

	scratch := filepath.Join(dataDir, "worker", "scratch", c.instances("flood")[0].ID)
	if info, err := os.Stat(filepath.Join(scratch, "fill")); err != nil || info.Size() != 1<<20 {
		t.Fatalf("the flood's file on the node: %v, %v; want 1 MiB", info, err)
	}
	c.mustRun("delete", "flood")
	eventually(t, "the flood's scratch space to be removed", func() (bool, string) {
		_, err := os.Stat(scratch)
		return os.IsNotExist(err), "still there"
	})
}
