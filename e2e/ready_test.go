package e2e

import (
	"strings"
	"testing"
)

// TestDeployWaitsForInstancesThatStayUp checks what deploy's wait takes
// for ready. The server's min-ready is a minute here, so that what a
// subtest sees does not depend on how fast a loaded machine runs the
// guests: a service (restart always) is ready only once the wait has seen
// it running for a minute, so one that crashes soon after it starts
// (reported Running first) or exits 0 fails the deploy, naming the
// instance and why; a command that completed is ready at once.
func TestDeployWaitsForInstancesThatStayUp(t *testing.T) {
	t.Parallel()
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t), "--rollout-min-ready", "1m")

	t.Run("a service that crashes soon after it starts fails the deploy", func(t *testing.T) {
		c := c.with(t)
		r := c.run("deploy", "testdata/quickfail.wasm")
		errorLine(t, r, "workload quickfail is not ready: instance quickfail-")
		errorLine(t, r, "failed: Error: exit code 2")
		if logs := c.mustRun("logs", "quickfail").stdout; !strings.Contains(logs, "quickfail: exiting with code 2") {
			t.Errorf("logs quickfail:\n%s", logs)
		}
	})

	t.Run("a service that exits 0 fails the deploy", func(t *testing.T) {
		c := c.with(t)
		r := c.run("deploy", "testdata/hello.wasm", "--name", "svc")
		errorLine(t, r, "exited with code 0 and restart policy always runs it again, where a service keeps running; deploy a command that ends with --restart on-failure or never")
	})

	t.Run("a command that completed is ready", func(t *testing.T) {
		c := c.with(t)
		for _, restart := range []string{"on-failure", "never"} {
			r := c.mustRun("deploy", "testdata/hello.wasm", "--name", "job-"+restart, "--restart", restart)
			if !strings.Contains(r.stdout, "deployed job-"+restart+" (generation 1): 1/1") {
				t.Errorf("deploy --restart %s printed %q", restart, r.stdout)
			}
		}
		if table := c.mustRun("get", "workloads").stdout; !hasRow(table, "job-on-failure", "1/1") {
			t.Errorf("get workloads does not show job-on-failure 1/1 ready:\n%s", table)
		}
	})

	t.Run("a running service is ready once running for min-ready", func(t *testing.T) {
		c := c.with(t)
		c.mustRun("deploy", "testdata/ticker.wasm", "--name", "tick", "--no-wait")
		eventually(t, "tick running", func() (bool, string) {
			is := c.instances("tick")
			return len(is) == 1 && is[0].State == "Running", toJSON(is)
		})
		r := c.run("rollout", "status", "tick", "--timeout", "2s")
		errorLine(t, r, "workload tick is not ready after 2s: 0/1 ready; last seen: instance tick-")
		errorLine(t, r, "is Running, ready once running for 1m0s")
	})
}
