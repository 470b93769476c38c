package e2e

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestWasmServicesThroughTheGateway: a C server (wasi-libc's accept on
// its preopened listener) serves a route through the gateway with two
// replicas and a health path; under steady load it goes through a
// `rollout restart` and a redeploy as a Go net/http server (poll_oneoff
// on its sockets) with zero failed requests; the C server comes back as a
// canary beside the Go one, then is promoted. Bad --port input is refused
// with one line and nothing stored; a guest that never accepts is not
// ready, saying why.
func TestWasmServicesThroughTheGateway(t *testing.T) {
	c := startUp(t)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"testdata/greet.wasm", "--port", "8080", "--route", "/bad"}, "error: --port: testdata/greet.wasm does not import wasi_snapshot_preview1.sock_accept, so it cannot accept connections on a listener"},
		{[]string{"testdata/cserver.wasm", "--port", "70000", "--route", "/bad"}, "error: invalid --port 70000: a TCP port is 1-65535"},
		{[]string{"testdata/cserver.wasm", "--port", "8080"}, "error: --port needs --route or --tcp"},
		{[]string{"testdata/cserver.wasm", "--port", "8080", "--tcp", "--route", "/bad"}, "error: --tcp takes no --route"},
	} {
		r := c.run(append([]string{"deploy", "--name", "bad"}, tc.args...)...)
		oneLineError(t, r, tc.want)
	}
	if ws := c.workloads(); len(ws) != 0 {
		t.Fatalf("bad input stored workloads: %s", toJSON(ws))
	}

	deploy := func(module string) {
		t.Helper()
		r := c.mustRun("deploy", module, "--name", "svc", "--port", "8080", "--route", "/svc", "--replicas", "2",
			"--health-path", "/healthz", "--health-interval", "200ms", "--timeout", "3m")
		if !strings.Contains(r.stdout, "2/2 ready") {
			t.Fatalf("deploy %s: %s", module, r)
		}
	}
	deploy("testdata/cserver.wasm")
	c.waitRouted("/svc", "")
	c.onlyAnswer("/svc/a?b=c", "hello from c: GET /svc/a (0 bytes)")
	if r := c.call(request{method: "POST", path: "/svc/p", body: strings.NewReader("12345")}); r.status != 200 || r.body != "hello from c: POST /svc/p (5 bytes)\n" {
		t.Fatalf("POST: %d %q", r.status, r.body)
	}

	l := c.startLoad("/svc/load", 4)
	defer l.stop()
	checkpoint := func(step string) {
		t.Helper()
		if s := l.stats(); s.Failed > 0 {
			t.Fatalf("after %s: %s", step, s)
		}
	}
	eventually(t, "load answered", func() (bool, string) { s := l.stats(); return s.OK > 20, s.String() })

	c.mustRun("rollout", "restart", "svc")
	if r := c.mustRun("rollout", "status", "svc", "--timeout", "3m"); !strings.Contains(r.stdout, "2/2 ready") {
		t.Fatalf("rollout status after restart: %s", r)
	}
	okBefore := l.stats().OK
	eventually(t, "load answered after the restart", func() (bool, string) { s := l.stats(); return s.OK > okBefore+20, s.String() })
	checkpoint("rollout restart")

	deploy("testdata/goserver.wasm")
	c.onlyAnswer("/svc/load", "hello from go: GET /svc/load (0 bytes)")
	okBefore = l.stats().OK
	eventually(t, "load answered by the Go server", func() (bool, string) { s := l.stats(); return s.OK > okBefore+20, s.String() })
	s := l.stop()
	if s.Failed > 0 {
		t.Fatalf("the redeploy with a new module: %s", s)
	}
	var fromC, fromGo int
	for answer, n := range s.Answers {
		switch {
		case strings.HasPrefix(answer, "hello from c: "):
			fromC += n
		case strings.HasPrefix(answer, "hello from go: "):
			fromGo += n
		default:
			t.Errorf("unexpected answer %q (%d times)", answer, n)
		}
	}
	if fromC == 0 || fromGo == 0 {
		t.Errorf("the load was answered %d times by the C server and %d by the Go server, want both", fromC, fromGo)
	}
	t.Logf("load: %s", s)

	// A canary: the C server again as a new revision gets its share of the
	// traffic beside the Go server, on its own replica, until promoted.
	if r := c.mustRun("deploy", "testdata/cserver.wasm", "--name", "svc", "--port", "8080", "--route", "/svc", "--replicas", "2",
		"--health-path", "/healthz", "--health-interval", "200ms", "--canary", "50%", "--timeout", "3m"); !strings.Contains(r.stdout, "svc: canary of generation 4 ready (1 replica, 50% of traffic)") {
		t.Fatalf("deploy --canary: %s", r)
	}
	const fromCanary, fromStable = "hello from c: GET /svc/k (0 bytes)", "hello from go: GET /svc/k (0 bytes)"
	eventually(t, "both revisions answer during the canary", func() (bool, string) {
		answers, failed := c.canaryLoad("/svc/k", 40)
		if len(failed) > 0 {
			t.Fatalf("during the canary: %d of 40 requests failed, e.g. %s", len(failed), failed[0])
		}
		return answers[fromCanary] > 0 && answers[fromStable] > 0 && answers[fromCanary]+answers[fromStable] == 40, fmt.Sprint(answers)
	})
	c.mustRun("rollout", "promote", "svc")
	c.mustRun("rollout", "status", "svc", "--timeout", "3m")
	c.onlyAnswer("/svc/k", fromCanary)

	// A guest that never accepts: deploy gives up saying why, and the
	// instance stays Starting with that message.
	r := c.run("deploy", "testdata/cserver.wasm", "--name", "never", "--port", "8080", "--route", "/never", "--timeout", "5s", "--", "never")
	errorLine(t, r, "waiting for the guest to accept connections on its listener (port 8080, $LISTEN_FD)")
	var insts []struct {
		State   string `json:"state"`
		Message string `json:"message"`
	}
	c.getJSON(&insts, "instances", "--workload", "never")
	if len(insts) != 1 || insts[0].State != "Starting" || !strings.Contains(insts[0].Message, "waiting for the guest to accept connections") {
		t.Errorf("the instance that never accepts: %s", toJSON(insts))
	}
}

// TestWasmTCPService: --tcp serves the guest's own protocol on the node's
// port.
func TestWasmTCPService(t *testing.T) {
	c := startUp(t)
	port := freePort(t)
	c.mustRun("deploy", "testdata/cserver.wasm", "--name", "plain", "--port", fmt.Sprint(port), "--tcp")
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(port)), requestLimit)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(requestLimit))
	if _, err := conn.Write([]byte("GET /plain HTTP/1.0\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(conn)
	if err != nil || !strings.HasSuffix(string(b), "\r\n\r\nhello from c: GET /plain (0 bytes)\n") {
		t.Fatalf("on the node's port %d: %q, %v", port, b, err)
	}
}

// freePort is a TCP port free on loopback a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	_, p, err := net.SplitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	var n int
	fmt.Sscan(p, &n)
	return n
}
