package e2e

import (
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/internal/ctrtest"
)

// TestTourContainerLines runs the README tour's container lines as
// written, on the archive `make tour-images` builds (into a directory of
// the test's own): the archive is a valid OCI layout of this machine's
// architecture; deployed as a service it runs as a container with its
// arguments; with --port and --route the gateway answers with it; and as
// the fallback of a module the wasm runtime cannot run, it runs instead.
func TestTourContainerLines(t *testing.T) {
	dir := t.TempDir()
	mk := exec.Command("make", "--no-print-directory", "tour-images", "TOUR="+dir)
	mk.Dir = repoRoot
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make tour-images: %v\n%s", err, out)
	}
	archive := filepath.Join(dir, "app-oci.tar")
	b, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ociarchive.Inspect(b); err != nil {
		t.Fatalf("make tour-images wrote an archive that does not inspect: %v", err)
	}

	d := ctrtest.Start(t)
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t), "--containerd-socket", d.Socket)

	c.mustRun("deploy", archive, "--name", "api2", "--", "--verbose")
	eventually(t, "api2's container says it is up with its argument", func() (bool, string) {
		logs := c.mustRun("logs", "api2").stdout
		return strings.Contains(logs, "tourapp: up on ") && strings.Contains(logs, "args [--verbose]"), logs
	})

	c.mustRun("deploy", archive, "--name", "web", "--port", "8080", "--route", "/web")
	c.waitRouted("/web", "")
	expect(t, "GET /web", c.call(request{path: "/web"}), http.StatusOK, "hello from a container (")

	c.mustRun("deploy", "testdata/badimport.wasm", "--name", "legacy", "--fallback-image", archive)
	insts := c.instanceDetails("legacy")
	if len(insts) != 1 || insts[0].Runtime != "container" || !strings.Contains(insts[0].RuntimeReason, "fallback image") {
		t.Fatalf("instances of legacy = %s, want one running its fallback image as a container", toJSON(insts))
	}
}
