package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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
	oneLineError(t, c.run("deploy", "--image", "team/app:1", "--name", "big", "--scratch", "32Mi"), "scratch space of 32Mi is more than any node allows one instance")
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

// A counter bumps a file in its named volume across a rollout restart and
// a kill -9 of the agent (here `up`, whose worker runs it), with the built
// binary, as docs/storage.md shows it; `volume ls|describe|rm` manage the
// volume, rm refused while a workload mounts it.
func TestNamedVolumeCounter(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	c := startUpAt(t, dataDir, freeAddr(t), freeAddr(t))

	oneLineError(t, c.run("deploy", "testdata/volcounter.wasm", "--name", "counter", "--volume", "Data:/data"), `invalid --volume "Data:/data": the volume name`)
	oneLineError(t, c.run("deploy", "testdata/volcounter.wasm", "--name", "counter", "--volume", "data"), `invalid --volume "data": want NAME:/PATH`)
	oneLineError(t, c.run("deploy", "testdata/volcounter.wasm", "--name", "counter", "--volume", "data:/config/x"), "volume data: guest path /config/x overlaps /config")
	if ws := c.workloads(); len(ws) != 0 {
		t.Fatalf("refused deploys stored workloads: %v", toJSON(ws))
	}

	c.mustRun("deploy", "testdata/volcounter.wasm", "--name", "counter", "--volume", "data:/data")
	waitLogs := func(c *cluster, want string) {
		t.Helper()
		eventually(t, want, func() (bool, string) {
			out := c.run("logs", "counter").stdout
			return strings.Contains(out, want+"\n"), out
		})
	}
	waitLogs(c, "count 1")
	c.mustRun("rollout", "restart", "counter")
	c.mustRun("rollout", "status", "counter")
	waitLogs(c, "count 2")

	c.stop(syscall.SIGKILL)
	c = startUpAt(t, dataDir, c.api, c.http)
	waitLogs(c, "count 3")

	var vols []struct {
		Name      string   `json:"name"`
		Node      string   `json:"node"`
		UID       string   `json:"uid"`
		Workloads []string `json:"workloads"`
	}
	if err := json.Unmarshal([]byte(c.mustRun("volume", "ls", "-o", "json").stdout), &vols); err != nil {
		t.Fatal(err)
	}
	if len(vols) != 1 || vols[0].Name != "data" || vols[0].Node != "e2e-node" || len(vols[0].Workloads) != 1 || vols[0].Workloads[0] != "counter" {
		t.Fatalf("volume ls: %v", toJSON(vols))
	}
	if b, err := os.ReadFile(filepath.Join(dataDir, "worker", "volumes", "data."+vols[0].UID, "count")); err != nil || string(b) != "3\n" {
		t.Fatalf("the count on the node: %q, %v", b, err)
	}
	if out := c.mustRun("volume", "describe", "data").stdout; !strings.Contains(out, "Node:        e2e-node\n") || !strings.Contains(out, "Mounted by:  counter\n") {
		t.Errorf("volume describe:\n%s", out)
	}
	oneLineError(t, c.run("volume", "rm", "data"), `volume "data" is mounted by workload counter; delete them or deploy them without --volume data first`)
	c.mustRun("delete", "counter")
	c.mustRun("volume", "rm", "data")
	oneLineError(t, c.run("volume", "rm", "data"), `volume "data" not found`)
	c.stop(syscall.SIGTERM) // its next start deletes the directory, as it asks after connecting
	startUpAt(t, dataDir, c.api, c.http)
	eventually(t, "the removed volume's directory to be deleted", func() (bool, string) {
		_, err := os.Stat(filepath.Join(dataDir, "worker", "volumes", "data."+vols[0].UID))
		return os.IsNotExist(err), fmt.Sprint(err)
	})
}

// Host mounts with the built binary, as docs/storage.md shows them: only
// under what up --allow-mount allows, read-only with :ro, and refused in
// one line elsewhere.
func TestHostMounts(t *testing.T) {
	t.Parallel()
	srv := t.TempDir()
	media := filepath.Join(srv, "media")
	if err := os.MkdirAll(media, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(media, "hello"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t), "--allow-mount", srv)

	c.mustRun("deploy", "testdata/cat.wasm", "--name", "media", "--restart", "never", "--mount", media+":/media:ro", "--", "/media/hello", "+/media/new")
	eventually(t, "the read-only mount's output", func() (bool, string) {
		out := c.run("logs", "media").stdout
		return out == "/media/hello: hi\n/media/new: cannot write\n", out
	})
	oneLineError(t, c.run("deploy", "testdata/cat.wasm", "--name", "etc", "--mount", "/etc:/etc"),
		"host path /etc is not allowed on any node: nodes allow "+srv+" and what is below (agent|up --allow-mount)")
	oneLineError(t, c.run("deploy", "testdata/cat.wasm", "--name", "etc", "--mount", "etc:/etc"), `invalid --mount "etc:/etc": both paths must be absolute`)
	if out := c.mustRun("get", "workload", "media", "-o", "yaml").stdout; !strings.Contains(out, media+":/media:ro") {
		t.Errorf("get -o yaml does not show the mount:\n%s", out)
	}
}
