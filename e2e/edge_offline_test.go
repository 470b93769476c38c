package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wasmorch/wasmorch/controlplane/workloads"
)

// siteClient is an HTTP client at the edge site: it dials from inside the
// network namespace ns, where the agent runs, so it reaches the agent's
// local function listener whether or not the site's uplink is up.
func siteClient(t *testing.T, ns string) *http.Client {
	t.Helper()
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		type dialed struct {
			c   net.Conn
			err error
		}
		ch := make(chan dialed, 1)
		go func() {
			// The socket is made in the namespace of the thread that makes
			// it. This thread is never unlocked: it ends with the goroutine
			// rather than go back to the scheduler in another namespace.
			runtime.LockOSThread()
			f, err := os.Open("/var/run/netns/" + ns)
			if err == nil {
				err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
				_ = f.Close()
			}
			if err != nil {
				ch <- dialed{nil, fmt.Errorf("entering network namespace %s: %w", ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- dialed{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

// siteCalls calls a function through the agent's local listener over and
// over, and counts the answers.
type siteCalls struct {
	mu     sync.Mutex
	ok     int
	failed []siteFailure
	lastOK time.Time
}

type siteFailure struct {
	at   time.Time // when the call began
	what string
}

func (s *siteCalls) record(began time.Time, ok bool, what string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok {
		s.ok++
		s.lastOK = time.Now()
		return
	}
	s.failed = append(s.failed, siteFailure{began, what})
}

// snapshot is how many calls were answered, the failures, and when the
// latest answer came.
func (s *siteCalls) snapshot() (int, []siteFailure, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ok, slices.Clone(s.failed), s.lastOK
}

// failedAfter is the failures of calls begun after t.
func failedAfter(fs []siteFailure, t time.Time) []string {
	var out []string
	for _, f := range fs {
		if f.at.After(t) {
			out = append(out, f.at.Format("15:04:05.000")+" "+f.what)
		}
	}
	return out
}

// TestEdgeAgentRestartedWhileCutOff cuts an edge site's link for a minute
// and, in the middle of it, kills its agent (SIGKILL) and starts it again.
// The restarted agent runs the desired set it kept on disk: the same
// instance IDs, their logs kept, the job that had completed not run again,
// and the HTTP function answering the site's clients on the agent's own
// listener (`--local-http`), which a client in the site's network calls
// throughout, counting the answers; so does a function at zero replicas
// that never ran on the node, started cold by the agent for each call,
// before the cut, while cut off and after the agent's restart (it stays
// at zero replicas: local calls never reach a gateway). When the link returns, the control
// plane has replaced nothing (the node is within its 3m grace), and the
// agent restarts nothing: the same IDs, the restart counts it reported
// (each instance's one restart, the agent's own), the tickers counting on.
func TestEdgeAgentRestartedWhileCutOff(t *testing.T) {
	t.Parallel()
	link := newNetns(t)
	m := startServerOn(t, loopbackAddr(t, link.hostIP))
	grace := workloads.LostAfterLabel + "=3m"
	token := joinToken(t, m.env, m.api, "--node", "site", "--labels", grace, "--uses", "1")
	dataDir := t.TempDir()
	const local = "127.0.0.1:8080" // in the site's namespace
	args := []string{"--server", m.api, "--token", token, "--name", "site", "--labels", grace, "--data-dir", dataDir,
		"--listen", link.nsIP + ":0", "--functions-listen", link.nsIP + ":0", "--local-http", local}
	agent := startBinary(t, "agent-site", m.env, slimAgent(t, runtime.GOARCH, ""), []string{"ip", "netns", "exec", link.ns}, args...)
	m.agents["site"] = agent
	m.waitNode("site", "Ready")

	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "tick", "--replicas", "2", "--selector", grace)
	m.mustRun("deploy", "testdata/hello.wasm", "--name", "job", "--restart", "never", "--selector", grace, "--no-wait")
	m.deployFunction("testdata/greet.wasm", "greet", "/greet", "--selector", grace)
	m.mustRun("deploy", "testdata/greet.wasm", "--name", "lazy", "--route", "/lazy", "--env", "GREETING=cold", "--selector", grace,
		"--replicas", "0", "--min-replicas", "0", "--max-replicas", "1", "--idle", "1h")
	m.waitSettled("tick", 2)
	eventually(t, "job succeeded", func() (bool, string) {
		is := m.instances("job")
		return len(is) == 1 && is[0].State == "Succeeded", toJSON(is)
	})
	expect(t, "greet through the gateway", m.call(request{method: "GET", path: "/greet?who=cloud"}), 200, "hello, cloud!")
	before := map[string]instanceJSON{}
	for _, in := range m.instances("") {
		before[in.ID] = in
	}

	site := siteClient(t, link.ns)
	callPath := func(path, want string) (bool, string) {
		resp, err := site.Get("http://" + local + path)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && strings.Contains(string(b), want), fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	call := func() (bool, string) { return callPath("/greet?who=site", "hello, site!") }
	callLazy := func() (bool, string) { return callPath("/lazy?who=site", "cold, site!") }
	if ok, got := call(); !ok {
		t.Fatalf("the site's client through the agent's local listener: %s", got)
	}
	// The node hears of lazy in its session, a moment after the deploy.
	eventually(t, "lazy, at zero replicas, started cold on the local listener", callLazy)
	if is := m.instances("lazy"); len(is) != 0 {
		t.Fatalf("lazy has instances %s: the local listener's cold start must not scale it", toJSON(is))
	}
	// 404 for a path no function of this node serves.
	if resp, err := site.Get("http://" + local + "/nothing-here"); err != nil || resp.StatusCode != 404 {
		t.Fatalf("an unknown path on the local listener: %v %v, want 404", resp, err)
	} else {
		resp.Body.Close()
	}

	calls, lazyCalls := &siteCalls{}, &siteCalls{}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			began := time.Now()
			ok, what := call()
			calls.record(began, ok, what)
			began = time.Now()
			ok, what = callLazy()
			lazyCalls.record(began, ok, what)
		}
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
	}()

	link.ip("link", "set", link.hostIf, "down")
	cut := time.Now()
	checkWithinGrace := func() {
		t.Helper()
		if state := m.nodes()["site"].State; state != "Ready" {
			t.Fatalf("site is %s %v after its link went down, within its 3m grace", state, time.Since(cut).Round(time.Second))
		}
		for _, in := range m.instances("") {
			if _, ok := before[in.ID]; !ok || in.State == "Lost" {
				t.Fatalf("while site is cut off, within its grace: %s", toJSON(in))
			}
		}
	}
	time.Sleep(10 * time.Second)
	checkWithinGrace()
	okBeforeKill, failedBeforeKill, _ := calls.snapshot()
	if okBeforeKill == 0 || len(failedBeforeKill) > 0 {
		t.Fatalf("cut off, before the agent was killed: %d calls answered, failed: %v", okBeforeKill, failedBeforeKill)
	}
	if ok, failed, _ := lazyCalls.snapshot(); ok == 0 || len(failed) > 0 {
		t.Fatalf("cut off, before the agent was killed: %d calls of lazy (at zero replicas) answered, failed: %v", ok, failed)
	}

	agent.stop(syscall.SIGKILL)
	killed := time.Now()
	agent.start()
	eventually(t, "the restarted agent runs its set from disk", func() (bool, string) {
		out, _ := os.ReadFile(agent.log)
		return strings.Contains(string(out), "running the desired set kept on disk"), string(out)
	})
	eventually(t, "the functions answer the site again", func() (bool, string) {
		_, _, last := calls.snapshot()
		_, _, lastLazy := lazyCalls.snapshot()
		return last.After(killed) && lastLazy.After(killed), "no answer of greet or lazy since the agent was killed"
	})
	resumed := time.Now()
	t.Logf("the site's calls failed for %v across the agent's restart (from kill -9 to the set from disk answering)", resumed.Sub(killed).Round(100*time.Millisecond))
	for time.Since(cut) < edgeCut {
		time.Sleep(5 * time.Second)
		checkWithinGrace()
	}
	okCut, failedCut, _ := calls.snapshot()
	if failedUp := failedAfter(failedCut, resumed); len(failedUp) > 0 {
		t.Errorf("calls through the local listener failed after the restarted agent answered, while cut off: %v", failedUp)
	}
	okLazy, failedLazy, _ := lazyCalls.snapshot()
	if failedUp := failedAfter(failedLazy, resumed); len(failedUp) > 0 {
		t.Errorf("calls of lazy (at zero replicas) through the local listener failed after the restarted agent answered, while cut off: %v", failedUp)
	}
	t.Logf("cut off: %d calls of lazy, at zero replicas, answered cold by the agent, %d failed (while the agent was down)", okLazy, len(failedLazy))
	t.Logf("cut off for %v: %d calls answered through the agent's local listener, %d failed (while the agent was down)", time.Since(cut).Round(time.Second), okCut, len(failedCut))

	link.ip("link", "set", link.hostIf, "up")
	// The restarted agent reports each instance it started again from disk
	// with one more restart: its own.
	eventually(t, "site reports the restart of its instances", func() (bool, string) {
		is := m.instances("tick")
		for _, in := range is {
			if in.Restarts != before[in.ID].Restarts+1 || in.State != "Running" {
				return false, toJSON(is)
			}
		}
		return len(is) == 2, toJSON(is)
	})
	reconnected := map[string]instanceJSON{}
	for _, in := range m.instances("") {
		reconnected[in.ID] = in
	}
	if len(reconnected) != len(before) {
		t.Fatalf("instances before the cut:\n%s\nafter:\n%s", toJSON(before), toJSON(reconnected))
	}
	for id, b := range before {
		a, ok := reconnected[id]
		switch {
		case !ok:
			t.Errorf("instance %s (%s) is gone after the cut", id, b.Workload)
		case a.Workload == "job" && (a.State != "Succeeded" || a.Restarts != b.Restarts):
			t.Errorf("the job after the cut: %s, want it Succeeded as before (%s), not run again", toJSON(a), toJSON(b))
		case a.Workload != "job" && (a.State != "Running" || a.Restarts != b.Restarts+1):
			t.Errorf("%s after the cut: %s; before: %s; want it Running with the agent's restart counted", id, toJSON(a), toJSON(b))
		}
	}
	// Its logs were kept across the agent's restart: the ticker started
	// twice (the first run's lines, then the run from disk), and the job's
	// one run. Later, nothing has restarted since the link returned.
	var tickID string
	for id, in := range before {
		if in.Workload == "tick" {
			tickID = id
			break
		}
	}
	starts := regexp.MustCompile(`(?m)^tick 1$`)
	// ticks reads the ticker's logs: how many times it started, and its
	// latest count.
	ticks := func() (int, int, string) {
		r := m.run("logs", "tick", "--instance", tickID)
		all := tickLine.FindAllStringSubmatch(r.stdout, -1)
		if r.code != 0 || len(all) == 0 {
			return 0, 0, r.String()
		}
		n, _ := strconv.Atoi(all[len(all)-1][1])
		return len(starts.FindAllString(r.stdout, -1)), n, r.stdout
	}
	var runs, nowTick int
	var out string
	// The member's connection to the agent's log service may take a
	// moment to come back ("try again in a moment").
	eventually(t, "the logs of "+tickID+" read through the member again", func() (bool, string) {
		runs, nowTick, out = ticks()
		return nowTick > 0, out
	})
	if runs != 2 {
		t.Fatalf("%s's logs show %d starts, want 2 (before and after the agent's restart):\n%s", tickID, runs, out)
	}
	if r := m.mustRun("logs", "job"); strings.Count(r.stdout, "hello from wasmorch") != 1 {
		t.Errorf("the job's logs after the agent's restart:\n%s\nwant its one run's output, kept", r.stdout)
	}
	time.Sleep(3 * time.Second)
	for _, in := range m.instances("") {
		if b := reconnected[in.ID]; in.Restarts != b.Restarts || in.State != b.State {
			t.Errorf("%s changed after the link returned: %s, was %s", in.ID, toJSON(in), toJSON(b))
		}
	}
	if runs, later, out := ticks(); runs != 2 || later <= nowTick {
		t.Errorf("%s after the link returned: %d starts in its logs (want 2), ticks from %d to %d (want it running on):\n%s", tickID, runs, nowTick, later, out)
	}
	eventually(t, "greet through the gateway after the cut", func() (bool, string) {
		r := m.call(request{method: "GET", path: "/greet?who=cloud"})
		return r.status == 200 && strings.Contains(r.body, "hello, cloud!"), fmt.Sprintf("%d %s", r.status, r.body)
	})
	okAll, failedAll, _ := calls.snapshot()
	t.Logf("in all: %d calls answered through the agent's local listener, %d failed", okAll, len(failedAll))
	if is := m.instances("lazy"); len(is) != 0 {
		t.Errorf("lazy has instances after the cut %s: the local listener's cold starts must not scale it", toJSON(is))
	}
}
