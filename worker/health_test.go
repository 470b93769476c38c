package worker

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/funcserver"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// scriptedProber answers health checks from a script and records the
// instance's status as each check begins (what the checks before it made).
type scriptedProber struct {
	in     *instance
	script []bool
	mu     sync.Mutex
	seen   []*pb.InstanceStatus
	end    chan struct{}
}

func (p *scriptedProber) Probe(ctx context.Context, _ time.Duration) funcserver.ProbeResult {
	p.in.mu.Lock()
	st := p.in.status
	p.in.mu.Unlock()
	p.mu.Lock()
	p.seen = append(p.seen, st)
	n := len(p.seen)
	p.mu.Unlock()
	if n > len(p.script) {
		if n == len(p.script)+1 {
			close(p.end)
		}
		<-ctx.Done()
		return funcserver.ProbeResult{}
	}
	if p.script[n-1] {
		return funcserver.ProbeResult{OK: true, Status: 200, Detail: "GET /f/healthz: 200 OK"}
	}
	return funcserver.ProbeResult{Status: 503, Detail: "GET /f/healthz: 503 Service Unavailable"}
}

// idleRun stands for a replica that runs until the test ends.
type idleRun struct{ done chan struct{} }

func (r idleRun) ID() string                                          { return "f-1" }
func (r idleRun) Done() <-chan struct{}                               { return r.done }
func (r idleRun) Exit() runtimeapi.Exit                               { return runtimeapi.Exit{} }
func (r idleRun) Stop(context.Context, time.Duration) runtimeapi.Exit { return runtimeapi.Exit{} }

// TestHealthChecksDriveTheReplicaStatus: Starting until a check passes,
// Running after; failures below the threshold are counted but leave it
// ready; the threshold makes it unhealthy; one pass makes it healthy.
func TestHealthChecksDriveTheReplicaStatus(t *testing.T) {
	w := &Worker{cfg: Config{NodeName: "n1"}, clock: realClock{}, statuses: newStatusBatcher(100)}
	run := idleRun{done: make(chan struct{})}
	in := &instance{rec: &pb.Instance{Id: "f-1"}, gen: 1, run: run}
	in.status = w.newStatus(in, pb.InstanceState_INSTANCE_STATE_STARTING, "", "waiting")
	script := []bool{false, true, true, false, false, false, false, true}
	p := &scriptedProber{in: in, script: script, end: make(chan struct{})}
	set := httptrigger.Settings{HealthPath: "/f/healthz", HealthInterval: time.Millisecond, Timeout: time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		w.checkHealth(ctx, in, 1, p, run.done, set)
	}()
	select {
	case <-p.end:
	case <-time.After(30 * time.Second): // a hang, not a speed check
		t.Fatal("the checks never reached the end of the script")
	}
	cancel()
	<-finished

	type want struct {
		state     pb.InstanceState
		failures  int32
		unhealthy bool
	}
	starting, running := pb.InstanceState_INSTANCE_STATE_STARTING, pb.InstanceState_INSTANCE_STATE_RUNNING
	wants := []want{ // after each scripted check
		{starting, 1, false}, // fails before it ever passed
		{running, 0, false},  // passes: ready
		{running, 0, false},
		{running, 1, false}, // one failure: still ready
		{running, 2, false},
		{running, 3, true}, // the threshold
		{running, 4, true},
		{running, 0, false}, // passes again
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, w := range wants {
		st := p.seen[i+1]
		if st.GetState() != w.state || st.GetHealthFailures() != w.failures || st.GetUnhealthy() != w.unhealthy {
			t.Errorf("after check %d (%v): %v, %d failures, unhealthy %v; want %v, %d, %v",
				i+1, script[i], st.GetState(), st.GetHealthFailures(), st.GetUnhealthy(), w.state, w.failures, w.unhealthy)
		}
	}
	if st := p.seen[6]; st.GetReason() != "Unhealthy" || st.GetHealthMessage() != "GET /f/healthz: 503 Service Unavailable" {
		t.Errorf("an unhealthy replica's status: reason %q, health message %q", st.GetReason(), st.GetHealthMessage())
	}
	if st := p.seen[1]; st.GetReason() != "HealthCheckFailed" {
		t.Errorf("a replica that never passed: reason %q, want HealthCheckFailed", st.GetReason())
	}
}
