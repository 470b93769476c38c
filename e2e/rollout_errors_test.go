package e2e

import (
	"strings"
	"testing"
)

// TestCanaryFailingItsRequestsIsRolledBack: a canary that passes its
// health check but answers 500 to its share of the traffic is rolled back
// by the controller from the gateways' counts of what each generation
// answered; only the canary's share failed meanwhile. The same revision
// without a canary is rolled back during its rolling update, and deploy,
// which waits for it, says so.
func TestCanaryFailingItsRequestsIsRolledBack(t *testing.T) {
	// Each wave of the rolling update waits 3 s, so that the rollback
	// comes while the update is still going on.
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t), "--rollout-min-ready", "3s")
	c.deployFunction("testdata/greet.wasm", "shop", "/shop", "--replicas", "4", "--health-path", "/healthz", "--env", "GREETING=v1")
	l := c.startLoad("/shop", 4)
	defer l.stop()

	// deploy returns once the canary has been running for min-ready, or
	// fails saying it was rolled back if its failed requests roll it back
	// first (it answers 500 from its first request on).
	r := c.run("deploy", "testdata/greet.wasm", "--name", "shop", "--route", "/shop", "--replicas", "4", "--health-path", "/healthz",
		"--env", "GREETING=v2", "--env", "FAIL=yes", "--canary", "25%")
	if r.code == 0 && !strings.Contains(r.stdout, "canary of generation 2 ready") {
		t.Fatalf("deploy of the failing canary: %s", r)
	}
	if r.code != 0 {
		errorLine(t, r, "generation 2 of shop was rolled back: generation 3 is an automatic rollback to revision 1: generation 2 failed")
	}
	eventually(t, "generation 3, an automatic rollback", func() (bool, string) {
		ws := c.workloads()
		return len(ws) == 1 && ws[0].Generation == 3, toJSON(ws)
	})
	rows := historyRows(t, c.mustRun("rollout", "history", "shop").stdout)
	if cause := rows["3 (current)"]; !strings.HasPrefix(cause, "automatic rollback to revision 1: generation 2 failed ") || !strings.Contains(cause, "over the limit of 10%") {
		t.Fatalf("rollout history: %v; want revision 3 an automatic rollback of generation 2's failed requests", rows)
	}
	c.mustRun("rollout", "status", "shop")
	c.onlyAnswer("/shop", "v1, world!")

	errorLine(t, c.run("deploy", "testdata/greet.wasm", "--name", "shop", "--route", "/shop", "--replicas", "4", "--health-path", "/healthz",
		"--env", "GREETING=v4", "--env", "FAIL=yes"),
		"generation 4 of shop was rolled back: generation 5 is an automatic rollback to revision 3: generation 4 failed")
	c.mustRun("rollout", "status", "shop")
	c.onlyAnswer("/shop", "v1, world!")

	s := l.stop()
	for f := range s.Failures {
		if !strings.Contains(f, " 500 failing: FAIL=yes") {
			t.Errorf("a failure that is not the canary's own 500: %q (%s)", f, s)
		}
	}
	if s.Failed == 0 || s.Failed*2 > s.OK+s.Failed {
		t.Errorf("the load saw %s; want some of the new generations' 500s, and most requests answered by v1", s)
	}
	t.Logf("during the failing canary: %s", s)
}
