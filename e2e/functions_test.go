package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// TestFunctions drives HTTP functions through the real gateway of one
// `wasmorch up`: the CGI contract, body limits, every failure status
// provoked for real, routing, and conflicting routes.
func TestFunctions(t *testing.T) {
	t.Parallel()
	c := startUp(t)
	c.deployFunction("testdata/greet.wasm", "greet", "/greet", "--env", "GREETING=hi")
	c.deployFunction("testdata/echo.wasm", "echo", "/echo", "--max-body", "64Ki", "--env", "GREETING=from-env")

	t.Run("GreetAnswersFromAFreshInstance", func(t *testing.T) {
		c := c.with(t)
		expect(t, "greet ana", c.call(request{path: "/greet?who=ana"}), 200, "hi, ana!")
		expect(t, "greet", c.call(request{path: "/greet"}), 200, "hi, world!")
	})

	t.Run("ReplicasServeRatherThanRunAsCommands", func(t *testing.T) {
		c := c.with(t)
		// As a command, greet would exit at once and be restarted over
		// and over; as a function its instance waits for requests.
		for _, in := range c.instances("greet") {
			if in.State != "Running" || in.Restarts != 0 || in.ExitCode != nil {
				t.Errorf("greet instance %s", toJSON(in))
			}
		}
		if logs := c.mustRun("logs", "greet").stdout; strings.Contains(logs, "hi, world!") {
			t.Errorf("greet ran as a command; its logs:\n%s", logs)
		}
	})

	t.Run("CGIVariablesAndHeadersReachTheModule", func(t *testing.T) {
		c := c.with(t)
		rep := c.call(request{
			method: "PUT", path: "/echo/a/b?x=1&y=two", host: "fn.example:1234",
			header: map[string]string{"X-Test": "hello", "Content-Type": "text/x-test", "X-Echo-Status": "201 Created"},
			body:   strings.NewReader("payload"),
		})
		if rep.status != http.StatusCreated || rep.body != "payload" {
			t.Fatalf("got %d %q, want 201 and the body back", rep.status, rep.body)
		}
		want := map[string]string{
			"REQUEST_METHOD": "PUT", "SCRIPT_NAME": "/echo", "PATH_INFO": "/a/b", "QUERY_STRING": "x=1&y=two",
			"CONTENT_TYPE": "text/x-test", "CONTENT_LENGTH": "7", "SERVER_NAME": "fn.example", "SERVER_PORT": "1234",
			"HTTP_HOST": "fn.example:1234", "HTTP_X_TEST": "hello", "REMOTE_ADDR": "127.0.0.1",
			"GATEWAY_INTERFACE": "CGI/1.1", "X_MATCHED_ROUTE": "/echo", "GREETING": "from-env",
		}
		for k, v := range want {
			if got := rep.header.Get("X-Cgi-" + k); got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
		if ct := rep.header.Get("Content-Type"); ct != "text/x-test" {
			t.Errorf("Content-Type = %q, want the module's", ct)
		}
	})

	t.Run("GatewayHeadersCannotBeForged", func(t *testing.T) {
		c := c.with(t)
		rep := c.call(request{path: "/echo", header: map[string]string{"X-Wasmorch-Instance": "greet-nope", "X-Wasmorch-Route": "/"}})
		if rep.status != 200 || rep.header.Get("X-Cgi-Script_name") != "/echo" {
			t.Errorf("got %d, SCRIPT_NAME %q: a client's X-Wasmorch-* headers must be ignored", rep.status, rep.header.Get("X-Cgi-Script_name"))
		}
	})

	t.Run("BodiesUpToTheLimitRoundTrip", func(t *testing.T) {
		c := c.with(t)
		for _, n := range []int{0, 1, 4096, 64<<10 - 1, 64 << 10} {
			body := bytes.Repeat([]byte("0123456789abcdef"), n/16+1)[:n]
			rep := c.call(request{method: "POST", path: "/echo", body: bytes.NewReader(body)})
			if rep.status != 200 || rep.body != string(body) {
				t.Errorf("%d bytes: got %d and %d bytes back", n, rep.status, len(rep.body))
			}
		}
	})

	t.Run("BodyOverTheLimitIs413", func(t *testing.T) {
		c := c.with(t)
		over := bytes.Repeat([]byte("x"), 64<<10+1)
		expect(t, "with Content-Length", c.call(request{method: "POST", path: "/echo", body: bytes.NewReader(over)}), 413, "over the function's limit")
		// Without a length (chunked), the limit is found while reading.
		chunked := io.MultiReader(bytes.NewReader(over[:1000]), bytes.NewReader(over[1000:]))
		expect(t, "chunked", c.call(request{method: "POST", path: "/echo", body: chunked}), 413, "over the function's limit")
		expect(t, "echo afterwards", c.call(request{method: "POST", path: "/echo", body: strings.NewReader("ok")}), 200, "ok")
	})

	t.Run("TrapIs500WithTheDetailInTheEventsNotTheAnswer", func(t *testing.T) {
		c := c.with(t)
		c.deployFunction("testdata/trap.wasm", "trap", "/trap")
		rep := c.call(request{path: "/trap"})
		expect(t, "trap", rep, 500, "500 internal server error: the function failed (request id "+rep.header.Get("X-Request-Id")+")")
		if strings.Contains(rep.body, "wasm") {
			t.Errorf("the client is told how the function failed: %q", rep.body)
		}
		eventually(t, "the trap in the workload's events", func() (bool, string) {
			r := c.run("get", "events", "--workload", "trap")
			return r.code == 0 && strings.Contains(r.stdout, "FunctionFailed") && strings.Contains(r.stdout, "wasm error: unreachable"), r.String()
		})
		expect(t, "greet after a trap", c.call(request{path: "/greet"}), 200, "hi, world!")
	})

	t.Run("MalformedOutputIs502WithTheReasonInTheLogs", func(t *testing.T) {
		c := c.with(t)
		c.deployFunction("testdata/badcgi.wasm", "badcgi", "/badcgi")
		const reason = `malformed CGI output: header line "this is not CGI output" is not "Name: value"`
		expect(t, "badcgi", c.call(request{path: "/badcgi"}), 502, "the function gave no valid answer")
		if logs := c.mustRun("logs", "badcgi").stdout; !strings.Contains(logs, reason) {
			t.Errorf("logs badcgi do not give the reason:\n%s", logs)
		}
	})

	t.Run("LoopIsStoppedAtItsTimeoutWhileOthersAnswer", func(t *testing.T) {
		c := c.with(t)
		c.deployFunction("testdata/loop.wasm", "loop", "/loop", "--request-timeout", "3s", "--max-body", "1Ki")
		looped := make(chan reply, 1)
		go func() {
			rep, err := c.do(context.Background(), request{path: "/loop"})
			if err != nil {
				rep.body = err.Error()
			}
			looped <- rep
		}()
		for i := range 5 {
			if rep := c.call(request{path: "/greet?who=meanwhile"}); rep.status != 200 {
				t.Errorf("greet %d while loop spins: %d %q", i, rep.status, rep.body)
			}
		}
		expect(t, "loop", <-looped, 504, "the function did not answer in time")
		if logs := c.mustRun("logs", "loop").stdout; !strings.Contains(logs, "504: stopped at its timeout of 3s") {
			t.Errorf("logs loop:\n%s", logs)
		}
	})

	t.Run("SaturatedReplicaIs503WithRetryAfter", func(t *testing.T) {
		c := c.with(t)
		// One request runs, one waits; any third is turned away at once.
		c.deployFunction("testdata/loop.wasm", "spin", "/spin", "--concurrency", "1", "--queue", "1", "--request-timeout", "10m", "--max-body", "1Ki")
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel() // ends the spinning requests; their sandboxes are stopped
		replies := make(chan reply, 3)
		for range 3 {
			go func() {
				rep, err := c.do(ctx, request{path: "/spin"})
				if err != nil {
					rep.body = err.Error()
				}
				replies <- rep
			}()
		}
		rep := <-replies
		expect(t, "third request", rep, 503, "retry shortly")
		if rep.header.Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After: %v", rep.header)
		}
	})

	t.Run("OverlappingPrefixesRouteToTheLongest", func(t *testing.T) {
		c := c.with(t)
		c.deployFunction("testdata/echo.wasm", "api", "/api")
		c.deployFunction("testdata/greet.wasm", "apiv2", "/api/v2", "--env", "GREETING=v2")
		c.deployFunction("testdata/counter.wasm", "hosted", "/api", "--host", "fn.example")
		tests := []struct {
			path, host, wantBody, wantScript, wantPathInfo string
		}{
			{path: "/api/v2?who=x", wantBody: "v2, x!"},
			{path: "/api/v2/deeper/still", wantBody: "v2, world!"},
			{path: "/api/v2x", wantScript: "/api", wantPathInfo: "/v2x"},
			{path: "/api", wantScript: "/api", wantPathInfo: ""},
			{path: "/api/other", wantScript: "/api", wantPathInfo: "/other"},
			{path: "/api/v2", host: "fn.example", wantBody: "1\n"},
			{path: "/api/v2", host: "other.example", wantBody: "v2, world!"},
		}
		for _, tt := range tests {
			rep := c.call(request{path: tt.path, host: tt.host})
			if rep.status != 200 {
				t.Errorf("%s%s: %d %q", tt.host, tt.path, rep.status, rep.body)
				continue
			}
			if tt.wantBody != "" && rep.body != tt.wantBody && strings.TrimSpace(rep.body) != strings.TrimSpace(tt.wantBody) {
				t.Errorf("%s%s: body %q, want %q", tt.host, tt.path, rep.body, tt.wantBody)
			}
			if tt.wantScript != "" {
				if s, p := rep.header.Get("X-Cgi-Script_name"), rep.header.Get("X-Cgi-Path_info"); s != tt.wantScript || p != tt.wantPathInfo {
					t.Errorf("%s: SCRIPT_NAME %q PATH_INFO %q, want %q %q", tt.path, s, p, tt.wantScript, tt.wantPathInfo)
				}
			}
		}
		expect(t, "unrouted path", c.call(request{path: "/apiary"}), 404, "no function is routed")
	})

	t.Run("ConflictingRouteIsRefused", func(t *testing.T) {
		c := c.with(t)
		r := c.run("deploy", "testdata/greet.wasm", "--name", "thief", "--route", "/greet/")
		errorLine(t, r, "HTTP route /greet is already served by workload greet")
		for _, w := range c.workloads() {
			if w.Name == "thief" {
				t.Errorf("the refused workload was stored: %s", toJSON(w))
			}
		}
		expect(t, "greet still", c.call(request{path: "/greet"}), 200, "hi, world!")
	})

	t.Run("GetWorkloadsShowsTheRoute", func(t *testing.T) {
		c := c.with(t)
		table := c.mustRun("get", "workloads").stdout
		if !strings.Contains(table, "ROUTE") || !hasRowWith(table, "greet", "/greet") {
			t.Errorf("get workloads:\n%s", table)
		}
		var ws []struct {
			Name  string `json:"name"`
			Route string `json:"route"`
		}
		c.getJSON(&ws, "workloads")
		for _, w := range ws {
			if w.Name == "hosted" && w.Route != "fn.example/api" {
				t.Errorf("hosted route %q, want fn.example/api", w.Route)
			}
		}
	})
}

// hasRowWith says whether a table has a row starting with first and
// containing cell.
func hasRowWith(table, first, cell string) bool {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == first && strings.Contains(line, " "+cell) {
			return true
		}
	}
	return false
}

// TestFunctionScalesToZeroAndBack deploys an autoscaled function with no
// minimum: idle, it goes to zero replicas; a request then is held while a
// replica comes back, and answered. No request fails on the way.
func TestFunctionScalesToZeroAndBack(t *testing.T) {
	t.Parallel()
	c := startUp(t)
	c.deployFunction("testdata/counter.wasm", "lazy", "/lazy", "--min-replicas", "0", "--max-replicas", "2", "--idle", "1s")
	expect(t, "warm", c.call(request{path: "/lazy"}), 200, "1")

	eventually(t, "lazy scaled to zero", func() (bool, string) {
		ws, is := c.workloads(), c.instances("lazy")
		for _, w := range ws {
			if w.Name == "lazy" && w.Replicas == 0 && len(is) == 0 {
				return true, ""
			}
		}
		return false, toJSON(ws) + " " + toJSON(is)
	})

	// Cold: several requests at once, all answered.
	replies := make(chan reply, 3)
	for range 3 {
		go func() {
			rep, err := c.do(context.Background(), request{path: "/lazy"})
			if err != nil {
				rep.body = err.Error()
			}
			replies <- rep
		}()
	}
	for range 3 {
		expect(t, "cold", <-replies, 200, "1")
	}
	// The cold requests were served without waiting for a replica; the
	// replica count was raised beside them.
	eventually(t, "lazy scaled from zero", func() (bool, string) {
		for _, w := range c.workloads() {
			if w.Name == "lazy" && w.Replicas >= 1 && w.Replicas <= 2 {
				return true, ""
			}
		}
		return false, toJSON(c.workloads())
	})
	// And it goes back to zero.
	eventually(t, "lazy scaled to zero again", func() (bool, string) {
		is := c.instances("lazy")
		return len(is) == 0, toJSON(is)
	})
	// Each decision is an event on the workload.
	eventually(t, "scale events on lazy", func() (bool, string) {
		d := c.run("describe", "workload", "lazy")
		return d.code == 0 && strings.Contains(d.stdout, "ScaledToZero") && strings.Contains(d.stdout, "ScaledFromZero"), d.String()
	})
}

// TestFunctionColdStartAcrossProcesses: with `wasmorch server` and a
// separate `wasmorch agent`, a request for a function at zero replicas is
// answered by the agent without a replica (a cold start, which its log
// records), a replica follows, and `get workloads` shows the function's
// bounds and requests in flight.
func TestFunctionColdStartAcrossProcesses(t *testing.T) {
	t.Parallel()
	m := startServer(t)
	agent := m.startAgent("a1", "127.0.0.1", "")
	m.deployFunction("testdata/greet.wasm", "lazy", "/lazy", "--env", "GREETING=cold", "--min-replicas", "0", "--max-replicas", "2", "--idle", "1h")
	expect(t, "warm", m.call(request{path: "/lazy?who=ana"}), 200, "cold, ana!")

	scaleToZero(t, m, "lazy")
	// The gateway's table follows the instances' removal within
	// milliseconds; either way the request must be answered.
	expect(t, "cold", m.call(request{path: "/lazy?who=bo"}), 200, "cold, bo!")
	eventually(t, "a cold start in the agent's log", func() (bool, string) {
		out, err := os.ReadFile(agent.log)
		return err == nil && strings.Contains(string(out), "cold start"), string(out)
	})
	eventually(t, "a replica after the cold start", func() (bool, string) {
		for _, w := range m.workloads() {
			if w.Name == "lazy" && w.Replicas == 1 && w.Ready == 1 {
				return true, ""
			}
		}
		return false, toJSON(m.workloads())
	})
	table := m.mustRun("get", "workloads")
	if !strings.Contains(table.stdout, "1 (0..2)") || !strings.Contains(table.stdout, "IN-FLIGHT") {
		t.Errorf("get workloads does not show lazy's bounds and requests in flight:\n%s", table.stdout)
	}

	// What a cold start notes (here: why its answer was a 502) reaches
	// `wasmorch logs`, though no instance served it.
	m.deployFunction("testdata/badcgi.wasm", "bad", "/bad", "--min-replicas", "0", "--max-replicas", "1", "--idle", "1h")
	scaleToZero(t, m, "bad")
	expect(t, "cold bad", m.call(request{path: "/bad/cold-path"}), 502, "")
	eventually(t, "the cold 502's reason in wasmorch logs", func() (bool, string) {
		r := m.run("logs", "bad")
		return r.code == 0 && strings.Contains(r.stdout, "/bad/cold-path") && strings.Contains(r.stdout, "502"), r.String()
	})
}

// scaleToZero scales an autoscaled function to zero replicas and waits
// until it has none. The autoscaler may scale it up again at once on the
// load report of a request that has just finished (that is its job), so
// the scale is repeated until zero holds.
func scaleToZero(t *testing.T, m *multi, name string) {
	t.Helper()
	eventually(t, name+" at zero", func() (bool, string) {
		m.mustRun("scale", name, "--replicas", "0")
		is := m.instances(name)
		return len(is) == 0, toJSON(is)
	})
}

// TestAClientGoingAwayStopsItsCallAcrossProcesses: with `wasmorch server`
// and a separate `wasmorch agent`, a client that gives up on a function
// spinning in a busy loop makes the gateway close its connection to the
// worker, and the worker's function server cancels the call, which stops
// the guest (its outcome: Canceled) long before the function's timeout.
func TestAClientGoingAwayStopsItsCallAcrossProcesses(t *testing.T) {
	t.Parallel()
	m := startServer(t)
	agent := m.startAgentWith("a1", "127.0.0.1", m.joinToken(), "--log-level", "debug")
	// At most two spin at once should the calls not be stopped.
	m.deployFunction("testdata/loop.wasm", "spin", "/spin", "--request-timeout", "10m", "--max-body", "1Ki", "--concurrency", "2", "--queue", "1")
	eventually(t, "a call the worker canceled", func() (bool, string) {
		// The client gives up after a second, once the call has
		// (almost always) reached the worker; if it had not, the next
		// try.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		rep, err := m.do(ctx, request{path: "/spin"})
		if err == nil {
			return false, fmt.Sprintf("the spinning function answered %d %q", rep.status, rep.body)
		}
		out, rerr := os.ReadFile(agent.log)
		return rerr == nil && strings.Contains(string(out), `msg="function call failed"`) && strings.Contains(string(out), "outcome=Canceled"), string(out)
	})
}
