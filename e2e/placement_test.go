package e2e

import (
	"strings"
	"testing"
)

// TestArchAndOSPlacement: --arch and --os keep instances on matching
// nodes; with none, the instance stays Pending and says why.
func TestArchAndOSPlacement(t *testing.T) {
	c := startUp(t)
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "here", "--arch", "amd64,arm64,riscv64", "--os", "linux")
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "nowhere", "--arch", "riscv64", "--no-wait")
	eventually(t, "nowhere Pending with its reason", func() (bool, string) {
		r := c.mustRun("get", "instances", "--workload", "nowhere")
		return strings.Contains(r.stdout, "Pending") && strings.Contains(r.stdout, "arch mismatch"), r.stdout
	})
	oneLineError(t, c.run("deploy", "testdata/ticker.wasm", "--name", "bad", "--arch", "AMD 64"), `invalid --arch "AMD 64"`)
}
