package e2e

import (
	"slices"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/internal/ctrtest"
)

// TestFallbackImage deploys two modules with the same fallback image (an
// OCI image archive built by the test) on a node that offers both
// runtimes: the one importing a function the wasm runtime lacks runs as
// the container, its instance saying why; the plain one runs as Wasm.
func TestFallbackImage(t *testing.T) {
	d := ctrtest.Start(t)
	archive := appImage(t)
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t), "--containerd-socket", d.Socket)

	r := c.mustRun("deploy", "testdata/badimport.wasm", "--name", "legacy", "--fallback-image", archive, "--", "sleep")
	if !strings.Contains(r.stdout, "deployed legacy (generation 1): 1/1 ready") {
		t.Errorf("deploy printed %q", r.stdout)
	}
	legacy := c.instanceDetails("legacy")
	if len(legacy) != 1 || legacy[0].State != "Running" || legacy[0].Runtime != "container" ||
		!strings.Contains(legacy[0].RuntimeReason, "env.does_not_exist is not provided by the wasm runtime") {
		t.Fatalf("instances of legacy = %s, want one Running as a container because of its import", toJSON(legacy))
	}
	if ctrs, _ := leftovers(t, d); !slices.Equal(ctrs, []string{legacy[0].ID}) {
		t.Errorf("containerd holds containers %v, want [%s]", ctrs, legacy[0].ID)
	}
	eventually(t, "the fallback container's output in the logs", func() (bool, string) {
		logs := c.mustRun("logs", "legacy").stdout
		return strings.Contains(logs, "sleeping"), logs
	})

	c.mustRun("deploy", "testdata/hello.wasm", "--name", "plain", "--restart", "on-failure", "--fallback-image", archive)
	plain := c.instanceDetails("plain")
	if len(plain) != 1 || plain[0].Runtime != "wasm" || plain[0].RuntimeReason != "" {
		t.Fatalf("instances of plain = %s, want one running as wasm", toJSON(plain))
	}
	if ctrs, _ := leftovers(t, d); len(ctrs) != 1 {
		t.Errorf("containerd holds containers %v, want only legacy's", ctrs)
	}

	wide := c.mustRun("get", "instances", "-o", "wide").stdout
	if !strings.Contains(wide, "WHY") || !strings.Contains(wide, "fallback image: import env.does_not_exist") {
		t.Errorf("get instances -o wide does not say why legacy runs as a container:\n%s", wide)
	}

	c.mustRun("delete", "legacy")
	c.mustRun("delete", "plain")
	eventually(t, "the fallback container and its snapshot removed", func() (bool, string) {
		ctrs, snaps := leftovers(t, d)
		return len(ctrs) == 0 && len(snaps) == 0, "containers " + strings.Join(ctrs, ",") + " snapshots " + strings.Join(snaps, ",")
	})
}

// TestFallbackImageRefused refuses fallbacks that cannot work before
// anything is stored.
func TestFallbackImageRefused(t *testing.T) {
	t.Parallel()
	c := startUp(t)
	oneLineError(t, c.run("deploy", "testdata/hello.wasm", "--fallback-image", "Not A Reference!"), "fallback image reference")
	oneLineError(t, c.run("deploy", "--image", "team/app:1.0", "--fallback-image", "team/app:0.9"), "--fallback-image is for wasm modules")
	oneLineError(t, c.run("deploy", "testdata/hello.wasm", "--fallback-image", "testdata/hello.wasm"), "not an OCI image archive")
	if ws := c.workloads(); len(ws) != 0 {
		t.Errorf("workloads stored after refused deploys: %s", toJSON(ws))
	}
}
