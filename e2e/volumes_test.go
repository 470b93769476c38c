package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/internal/ctrtest"
)

// volumeJSON is a volume as `volume ls -o json` prints it.
type volumeJSON struct {
	Name      string   `json:"name"`
	Node      string   `json:"node"`
	UID       string   `json:"uid"`
	Workloads []string `json:"workloads"`
	Replica   *struct {
		Workload string `json:"workload"`
		Volume   string `json:"volume"`
		Ordinal  int32  `json:"ordinal"`
	} `json:"replica"`
}

func (c *cluster) volumes(t *testing.T) map[string]volumeJSON {
	t.Helper()
	var vols []volumeJSON
	if err := json.Unmarshal([]byte(c.mustRun("volume", "ls", "-o", "json").stdout), &vols); err != nil {
		t.Fatal(err)
	}
	out := map[string]volumeJSON{}
	for _, v := range vols {
		out[v.Name] = v
	}
	return out
}

// State (issue 14), per-instance volumes with the built binary, as
// docs/storage.md shows them: two replicas of a counter, each with its
// own volume (data-counter-0 and -1), each keep their own count across a
// `rollout restart`; `volume ls|describe` show whose slot each is, `rm`
// is refused while the slot is in use, and misspelled flags are refused
// in one line before anything is stored.
func TestPerInstanceVolumeCounter(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	c := startUpAt(t, dataDir, freeAddr(t), freeAddr(t))

	oneLineError(t, c.run("deploy", "testdata/volcounter.wasm", "--name", "counter", "--volume", "data:/data,per-instanse"),
		`invalid --volume "data:/data,per-instanse": unknown option "per-instanse" (the one option is per-instance)`)
	long := strings.Repeat("c", 55)
	oneLineError(t, c.run("deploy", "testdata/volcounter.wasm", "--name", long, "--volume", "data:/data,per-instance"),
		"volume data: the per-instance volumes of workload "+long+" are named data-"+long+"-0, up to 66 characters")
	if ws := c.workloads(); len(ws) != 0 {
		t.Fatalf("refused deploys stored workloads: %v", toJSON(ws))
	}

	c.mustRun("deploy", "testdata/volcounter.wasm", "--name", "counter", "--replicas", "2", "--volume", "data:/data,per-instance")
	counts := func() (map[string]string, string) {
		got := map[string]string{}
		vols := c.volumes(t)
		for _, name := range []string{"data-counter-0", "data-counter-1"} {
			b, _ := os.ReadFile(filepath.Join(dataDir, "worker", "volumes", name+"."+vols[name].UID, "count"))
			got[name] = strings.TrimSpace(string(b))
		}
		return got, toJSON(got)
	}
	eventually(t, "each replica to count 1 in its own volume", func() (bool, string) {
		got, why := counts()
		return got["data-counter-0"] == "1" && got["data-counter-1"] == "1", why
	})
	c.mustRun("rollout", "restart", "counter")
	c.mustRun("rollout", "status", "counter")
	// One shared volume would count to 4.
	eventually(t, "each replica to count 2 in its own volume", func() (bool, string) {
		got, why := counts()
		return got["data-counter-0"] == "2" && got["data-counter-1"] == "2", why
	})

	vols := c.volumes(t)
	for i, name := range []string{"data-counter-0", "data-counter-1"} {
		v := vols[name]
		if v.Node != "e2e-node" || len(v.Workloads) != 1 || v.Workloads[0] != "counter" || v.Replica == nil ||
			v.Replica.Workload != "counter" || v.Replica.Volume != "data" || v.Replica.Ordinal != int32(i) {
			t.Errorf("volume ls: %s is %s", name, toJSON(v))
		}
	}
	if out := c.mustRun("volume", "describe", "data-counter-1").stdout; !strings.Contains(out, "Replica:     1 of workload counter (its per-instance volume data)\n") ||
		!strings.Contains(out, "Mounted by:  counter\n") {
		t.Errorf("volume describe:\n%s", out)
	}
	if out := c.mustRun("get", "workload", "counter", "-o", "yaml").stdout; !strings.Contains(out, "data:/data,per-instance") {
		t.Errorf("get -o yaml does not show the per-instance volume:\n%s", out)
	}
	oneLineError(t, c.run("volume", "rm", "data-counter-1"),
		`volume "data-counter-1" is the per-instance volume data of replica 1 of workload counter, which has 2 replicas; scale it to 1 or fewer, or delete it, first`)

	// A scale-down keeps the volume of the slot it removes, no longer in use.
	c.mustRun("scale", "counter", "--replicas", "1")
	eventually(t, "slot 1's volume to be in use no more", func() (bool, string) {
		v := c.volumes(t)["data-counter-1"]
		return len(v.Workloads) == 0 && len(c.instances("counter")) == 1, fmt.Sprint(toJSON(v), toJSON(c.instances("counter")))
	})
	c.mustRun("volume", "rm", "data-counter-1")
	oneLineError(t, c.run("volume", "rm", "data-counter-0"), `volume "data-counter-0" is the per-instance volume data of replica 0 of workload counter`)
}

// State (issue 14), volumes, host mounts and scratch space for containers
// with the built binary and a containerd of the test's own: the counter
// of testdata/volcounter.c, built for Linux into an image, counts in a
// named volume as a container across a `rollout restart`; the same
// module built for Wasm counts on in the same volume, and so does a Wasm
// workload that falls back to that image; a container's host mount is
// read-only with :ro, and its scratch space is a tmpfs that a flood
// fills to its size and no further.
func TestContainerVolumes(t *testing.T) {
	t.Parallel()
	d := ctrtest.Start(t)
	counter := ctrtest.CImage(t, "volcounter")
	dataDir, media := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(media, "hello"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := startUpAt(t, dataDir, freeAddr(t), freeAddr(t), "--containerd-socket", d.Socket, "--allow-mount", media, "--max-scratch", "16Mi")
	waitLogs := func(workload, want string) {
		t.Helper()
		eventually(t, workload+" to print "+want, func() (bool, string) {
			out := c.run("logs", workload).stdout
			return strings.Contains(out, want+"\n"), out
		})
	}

	c.mustRun("deploy", counter, "--name", "box", "--volume", "data:/data")
	if is := c.instanceDetails("box"); len(is) != 1 || is[0].Runtime != "container" {
		t.Fatalf("box runs as %s, want a container", toJSON(is))
	}
	waitLogs("box", "count 1")
	c.mustRun("rollout", "restart", "box")
	c.mustRun("rollout", "status", "box")
	waitLogs("box", "count 2")
	c.mustRun("delete", "box")
	gone := func() (bool, string) { is := c.instances(""); return len(is) == 0, toJSON(is) }
	eventually(t, "box's instances to go", gone)

	c.mustRun("deploy", "testdata/volcounter.wasm", "--name", "wasm", "--volume", "data:/data")
	waitLogs("wasm", "count 3") // what the container wrote, read by a Wasm instance
	c.mustRun("delete", "wasm")
	eventually(t, "wasm's instances to go", gone)

	// badimport.wasm cannot run on the wasm runtime: it falls back to the
	// counter's image, which finds the same volume.
	c.mustRun("deploy", "testdata/badimport.wasm", "--name", "legacy", "--fallback-image", counter, "--volume", "data:/data")
	if is := c.instanceDetails("legacy"); len(is) != 1 || is[0].Runtime != "container" {
		t.Fatalf("legacy runs as %s, want its fallback container", toJSON(is))
	}
	waitLogs("legacy", "count 4")
	uid := c.volumes(t)["data"].UID
	if b, err := os.ReadFile(filepath.Join(dataDir, "worker", "volumes", "data."+uid, "count")); err != nil || string(b) != "4\n" {
		t.Errorf("the count in the volume's directory on the node: %q, %v", b, err)
	}

	c.mustRun("deploy", ctrtest.CImage(t, "cat"), "--name", "media", "--restart", "never", "--mount", media+":/media:ro", "--", "/media/hello", "+/media/new")
	waitLogs("media", "/media/hello: hi\n/media/new: cannot write")

	c.mustRun("deploy", ctrtest.CImage(t, "scratch"), "--name", "flood", "--scratch", "1Mi")
	waitLogs("flood", "wrote 1048576 bytes to /tmp/fill: No space left on device\nalive 1")
	oneLineError(t, c.run("deploy", ctrtest.CImage(t, "scratch"), "--name", "big", "--scratch", "32Mi"),
		"scratch space of 32Mi is more than any node allows one instance (at most 16Mi: agent|up --max-scratch)")
}

// State (issue 14), scratch space for a Wasm HTTP function with the built
// binary: each request's sandbox has a /tmp of its own, of the size, that
// a flood fills to its size and no further, that the next request does
// not see, and that is gone with the request; a size over the node's
// allowance is refused before anything is stored.
func TestFunctionScratchSpace(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	c := startUpAt(t, dataDir, freeAddr(t), freeAddr(t), "--max-scratch", "16Mi")
	oneLineError(t, c.run("deploy", "testdata/scratchfn.wasm", "--name", "big", "--route", "/big", "--scratch", "32Mi"),
		"scratch space of 32Mi is more than any node allows one instance (at most 16Mi: agent|up --max-scratch)")

	c.deployFunction("testdata/scratchfn.wasm", "scratchfn", "/s", "--scratch", "1Mi")
	expect(t, "a request flooding its /tmp", c.call(request{path: "/s?3000000"}), 200, "mark: absent\nwrote 1048576 bytes: No space left on device\n")
	expect(t, "the next request", c.call(request{path: "/s?1000"}), 200, "mark: absent\nwrote 1000 bytes\n")
	if left, err := os.ReadDir(filepath.Join(dataDir, "worker", "function-scratch")); err != nil || len(left) != 0 {
		t.Errorf("the requests' scratch spaces are left on the node: %v, %v", left, err)
	}
}
