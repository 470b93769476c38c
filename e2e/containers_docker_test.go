package e2e

import (
	"runtime"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/internal/ctrtest"
	"github.com/wasmorch/wasmorch/worker/runtimeapi/rtconformance"
)

// TestContainerFromADockerSaveArchive deploys an archive laid out as
// 'docker save' wrote them before Docker 25 (no oci-layout): deploy
// converts it and it runs as a container; deploying it again changes
// nothing. Such archives were refused with an error telling the user to
// run docker save ([hardening] 27).
func TestContainerFromADockerSaveArchive(t *testing.T) {
	d := ctrtest.Start(t)
	archive := ctrtest.DockerArchive(t, rtconformance.BuildProgram(t, "linux", runtime.GOARCH), "team/box:1.0")
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t), "--containerd-socket", d.Socket)

	r := c.mustRun("deploy", archive, "--name", "box", "--", "sleep")
	if !strings.Contains(r.stdout, "deployed box (generation 1): 1/1 ready") {
		t.Errorf("deploy printed %q", r.stdout)
	}
	insts := c.instanceDetails("box")
	if len(insts) != 1 || insts[0].State != "Running" || insts[0].Runtime != "container" {
		t.Fatalf("instances of box = %s, want one Running on the container runtime", toJSON(insts))
	}
	eventually(t, "the container's output in the logs", func() (bool, string) {
		logs := c.mustRun("logs", "box").stdout
		return strings.Contains(logs, "sleeping"), logs
	})
	r = c.mustRun("deploy", archive, "--name", "box", "--", "sleep")
	if !strings.Contains(r.stdout, "generation 1") {
		t.Errorf("deploying the same Docker archive again made a new generation: %q", r.stdout)
	}
}
