package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// onlyAnswer waits until the function at path answers want (its first
// line), three times in a row: an old replica may still answer a moment
// after a rollout is recorded done, while its worker drains it.
func (c *cluster) onlyAnswer(path, want string) {
	c.t.Helper()
	eventually(c.t, path+" answering "+want, func() (bool, string) {
		for range 3 {
			r := c.call(request{path: path})
			if r.status != 200 || firstLine(r.body) != want {
				return false, fmt.Sprintf("%d %q", r.status, r.body)
			}
		}
		return true, ""
	})
}

// TestRolloutsUnderLoadDropNoRequests: a server and two agents in
// separate processes serve a function of 4 replicas with a health path
// while clients call it through the gateway without pause. A rolling
// update, a rollback (rollout undo), and a revision that crashes on every
// request (rolled back automatically: its replicas never pass their health
// check, so they never get traffic), a canary promoted by hand, and a
// crashing canary (rolled back automatically) each complete with zero
// failed requests.
func TestRolloutsUnderLoadDropNoRequests(t *testing.T) {
	m := startServerOn(t, freeAddr(t))
	m.startAgent("a1", "127.0.0.1", "")
	m.startAgent("a2", "127.0.0.1", "")
	deploy := func(greeting string, extra ...string) result {
		args := append([]string{"deploy", "testdata/greet.wasm", "--name", "web", "--route", "/web", "--replicas", "4",
			"--health-path", "/healthz", "--health-interval", "200ms", "--env", "GREETING=" + greeting}, extra...)
		return m.run(args...)
	}
	if r := deploy("v1"); r.code != 0 {
		t.Fatalf("deploy v1: %s", r)
	}
	m.waitRouted("/web", "")
	m.onlyAnswer("/web", "v1, world!")

	l := m.startLoad("/web", 4)
	defer l.stop()
	// Checkpoints show which step a failure came from.
	checkpoint := func(step string) {
		t.Helper()
		if s := l.stats(); s.Failed > 0 {
			t.Fatalf("after %s: %s", step, s)
		}
	}

	// A rolling update.
	if r := deploy("v2"); r.code != 0 || !strings.Contains(r.stdout, "deployed web (generation 2): 4/4 ready") {
		t.Fatalf("deploy v2: %s", r)
	}
	m.onlyAnswer("/web", "v2, world!")
	checkpoint("the rolling update to v2")

	// A rollback.
	m.mustRun("rollout", "undo", "web")
	if r := m.mustRun("rollout", "status", "web"); r.stdout != "web rolled out (generation 3): 4/4 ready\n" {
		t.Fatalf("rollout status after undo: %s", r)
	}
	m.onlyAnswer("/web", "v1, world!")
	checkpoint("rollout undo")

	// A revision that crashes on every request: rolled back by itself.
	if r := deploy("v4", "--env", "HEALTH=crash", "--no-wait"); r.code != 0 {
		t.Fatalf("deploy of the crashing revision: %s", r)
	}
	eventually(t, "generation 5, an automatic rollback", func() (bool, string) {
		ws := m.workloads()
		return len(ws) == 1 && ws[0].Generation == 5, toJSON(ws)
	})
	if r := m.mustRun("rollout", "status", "web"); r.stdout != "web rolled out (generation 5): 4/4 ready\n" {
		t.Fatalf("rollout status after the automatic rollback: %s", r)
	}
	rows := historyRows(t, m.mustRun("rollout", "history", "web").stdout)
	if cause := rows["5 (current)"]; !strings.HasPrefix(cause, "automatic rollback to revision 3: instance web-") ||
		!strings.Contains(cause, "fails its health check") || !strings.Contains(cause, "GET /web/healthz: 500") {
		t.Fatalf("rollout history: %v; want revision 5 an automatic rollback of a failing health check", rows)
	}
	m.onlyAnswer("/web", "v1, world!")
	checkpoint("the automatic rollback")

	// A canary: a quarter of the traffic until promoted.
	if r := deploy("v6", "--canary", "25%"); r.code != 0 || !strings.Contains(r.stdout, "canary") {
		t.Fatalf("deploy of a canary: %s", r)
	}
	eventually(t, "the canary answering", func() (bool, string) {
		s := l.stats()
		return s.Answers["v6, world!"] > 0, s.String()
	})
	if ws := m.workloads(); len(ws) != 1 || ws[0].Generation != 6 || ws[0].Canary != "25%" || ws[0].PromotedGeneration >= 6 {
		t.Fatalf("get workloads during the canary: %s; want generation 6, canary 25%%, not promoted", toJSON(ws))
	}
	m.mustRun("rollout", "promote", "web")
	m.mustRun("rollout", "status", "web")
	if ws := m.workloads(); len(ws) != 1 || ws[0].PromotedGeneration != 6 {
		t.Fatalf("get workloads after promote: %s; want generation 6 promoted", toJSON(ws))
	}
	m.onlyAnswer("/web", "v6, world!")
	checkpoint("a canary and its promotion")

	// A canary that crashes on every request: rolled back by itself.
	if r := deploy("v7", "--canary", "25%", "--env", "HEALTH=crash", "--no-wait"); r.code != 0 {
		t.Fatalf("deploy of the crashing canary: %s", r)
	}
	eventually(t, "generation 8, an automatic rollback of the canary", func() (bool, string) {
		ws := m.workloads()
		return len(ws) == 1 && ws[0].Generation == 8, toJSON(ws)
	})
	m.mustRun("rollout", "status", "web")
	m.onlyAnswer("/web", "v6, world!")

	s := l.stop()
	if s.Failed > 0 {
		t.Fatalf("requests failed during the rollouts: %s", s)
	}
	for _, v := range []string{"v1", "v2", "v6"} {
		if s.Answers[v+", world!"] == 0 {
			t.Errorf("the load never saw %s: %s", v, s)
		}
	}
	if len(s.Answers) != 3 {
		t.Fatalf("the load saw %s; want v1, v2 and v6 answers and nothing else", s)
	}
	t.Logf("load during five rollouts: %s", s)
}

// TestHealthPathGatesTraffic: a function whose health check fails is
// never sent traffic, deploy says why, and `get instances` shows it
// Starting with the reason; bad health flags are refused.
func TestHealthPathGatesTraffic(t *testing.T) {
	c := startUp(t)
	r := c.run("deploy", "testdata/greet.wasm", "--name", "sick", "--route", "/sick", "--env", "HEALTH=fail",
		"--health-path", "/healthz", "--health-interval", "100ms")
	errorLine(t, r, "fails its health check: GET /sick/healthz: 503 Service Unavailable: not ready: HEALTH=fail")
	is := c.instances("sick")
	if len(is) != 1 || is[0].State != "Starting" {
		t.Fatalf("instances of a function failing its health check: %s; want one Starting", toJSON(is))
	}
	expect(t, "a request for a function with no healthy replica", c.call(request{path: "/sick"}), 503, "the function is not available")

	c.deployFunction("testdata/greet.wasm", "well", "/well", "--health-path", "/healthz")
	expect(t, "a healthy function", c.call(request{path: "/well?who=ana"}), 200, "hello, ana!")
	expect(t, "its health path", c.call(request{path: "/well/healthz"}), 200, "ok")
	if d := c.mustRun("describe", "workload", "well").stdout; !strings.Contains(d, "Health check:") || !strings.Contains(d, "GET /well/healthz every 2s") {
		t.Errorf("describe does not show the health check:\n%s", d)
	}

	oneLineError(t, c.run("deploy", "testdata/greet.wasm", "--name", "x", "--health-path", "/healthz"), "--health-path is only for HTTP functions")
	oneLineError(t, c.run("deploy", "testdata/greet.wasm", "--name", "x", "--route", "/x", "--health-path", "healthz"), `health path "healthz" is not a path`)
	oneLineError(t, c.run("deploy", "testdata/greet.wasm", "--name", "x", "--route", "/x", "--health-path", "/h", "--health-interval", "10ms"), "health interval 10ms is outside 100ms..10m0s")
	oneLineError(t, c.run("deploy", "testdata/greet.wasm", "--name", "x", "--route", "/x", "--health-interval", "1s"), "a health interval needs a health path")
	if ws := c.workloads(); len(ws) != 2 {
		t.Fatalf("refused deploys left workloads: %s", toJSON(ws))
	}
}
