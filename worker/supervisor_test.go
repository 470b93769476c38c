package worker

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/internal/fakert"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

const (
	always    = pb.RestartPolicy_RESTART_POLICY_ALWAYS
	onFailure = pb.RestartPolicy_RESTART_POLICY_ON_FAILURE
	never     = pb.RestartPolicy_RESTART_POLICY_NEVER
)

var (
	exitOK     = runtimeapi.Exit{Code: 0, Reason: runtimeapi.ReasonCompleted}
	exitError  = runtimeapi.Exit{Code: 3, Reason: runtimeapi.ReasonError, Message: "exit status 3"}
	exitTrap   = runtimeapi.Exit{Code: runtimeapi.TrapExitCode, Reason: runtimeapi.ReasonTrap, Message: "unreachable"}
	exitImport = runtimeapi.Exit{Code: 1, Reason: runtimeapi.ReasonImportError, Message: "env.missing", Permanent: true}
)

func TestBackoff(t *testing.T) {
	want := []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond}
	for n, d := range want {
		if got := backoff(n, defaultBackoff, defaultBackoffMax); got != d {
			t.Errorf("backoff(%d) = %s, want %s", n, got, d)
		}
	}
	if got := backoff(40, defaultBackoff, defaultBackoffMax); got != defaultBackoffMax {
		t.Errorf("backoff(40) = %s, want the cap %s", got, defaultBackoffMax)
	}
}

func TestRestartPolicy(t *testing.T) {
	tests := []struct {
		name      string
		policy    pb.RestartPolicy
		exit      runtimeapi.Exit
		restarted bool
		state     pb.InstanceState // when not restarted
		reason    string
	}{
		{"always restarts a success", always, exitOK, true, 0, ""},
		{"always restarts a failure", always, exitError, true, 0, ""},
		{"unspecified means always", pb.RestartPolicy_RESTART_POLICY_UNSPECIFIED, exitError, true, 0, ""},
		{"on-failure leaves a success", onFailure, exitOK, false, pb.InstanceState_INSTANCE_STATE_SUCCEEDED, runtimeapi.ReasonCompleted},
		{"on-failure restarts an error", onFailure, exitError, true, 0, ""},
		{"on-failure restarts a trap", onFailure, exitTrap, true, 0, ""},
		{"never leaves a failure", never, exitError, false, pb.InstanceState_INSTANCE_STATE_FAILED, runtimeapi.ReasonError},
		{"never leaves a success", never, exitOK, false, pb.InstanceState_INSTANCE_STATE_SUCCEEDED, runtimeapi.ReasonCompleted},
		{"a permanent exit is never restarted", always, exitImport, false, pb.InstanceState_INSTANCE_STATE_FAILED, runtimeapi.ReasonImportError},
	}
	e := startEnv(t, envOptions{fakeTime: true})
	var recs []*pb.Instance
	for i, tt := range tests {
		recs = append(recs, rec(fmt.Sprintf("i%d", i), tt.policy))
	}
	e.cp.setDesired(recs...)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("i%d", i)
			e.waitRunning(id).Terminate(tt.exit) // OnExit runs before Terminate returns.
			if tt.restarted {
				eventually(t, "restart", func() bool { return e.rt.Starts(id) == 2 })
				e.waitRunning(id)
				if st := e.workerStatus(id); st.GetRestarts() != 1 || st.GetState() != pb.InstanceState_INSTANCE_STATE_RUNNING {
					t.Fatalf("after restart: %v", st)
				}
				return
			}
			if !e.idle(id) || e.rt.Starts(id) != 1 {
				t.Fatalf("restart pending or done: starts=%d", e.rt.Starts(id))
			}
			st := e.workerStatus(id)
			if st.GetState() != tt.state || st.GetReason() != tt.reason || !st.GetExited() || st.GetExitCode() != tt.exit.Code || st.GetMessage() != tt.exit.Message {
				t.Fatalf("status %v, want state %s reason %s code %d", st, tt.state, tt.reason, tt.exit.Code)
			}
		})
	}
}

func TestCrashLoopBacksOffExponentially(t *testing.T) {
	e := startEnv(t, envOptions{fakeTime: true})
	e.cp.setDesired(rec("a", always))

	// The first restart is immediate: no time passes on the clock.
	e.waitRunning("a").Terminate(exitError)
	eventually(t, "immediate restart", func() bool { return e.rt.Starts("a") == 2 })

	for i, delay := range []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond} {
		e.waitRunning("a").Terminate(exitError)
		st := e.workerStatus("a")
		if st.GetState() != pb.InstanceState_INSTANCE_STATE_FAILED || st.GetExitCode() != 3 ||
			!strings.HasSuffix(st.GetMessage(), "restarting in "+delay.String()) {
			t.Fatalf("while backing off: %v", st)
		}
		if !e.clock.hasPending(delay) {
			t.Fatalf("no restart timer for %s; pending %v", delay, e.clock.Pending())
		}
		e.clock.Advance(delay - time.Millisecond)
		if e.rt.Starts("a") != i+2 {
			t.Fatalf("restarted before its backoff of %s", delay)
		}
		e.clock.Advance(time.Millisecond)
		eventually(t, "restart after "+delay.String(), func() bool { return e.rt.Starts("a") == i+3 })
	}
	e.waitRunning("a")
	if st := e.workerStatus("a"); st.GetRestarts() != 4 {
		t.Fatalf("restarts = %d, want 4", st.GetRestarts())
	}

	// A run of 10 s or more resets the backoff: the next restart is
	// immediate again.
	e.clock.Advance(defaultResetAfter)
	e.rt.Latest("a").Terminate(exitError)
	eventually(t, "immediate restart after a long run", func() bool { return e.rt.Starts("a") == 6 })
}

func TestExitBeforeStartReturns(t *testing.T) {
	e := startEnv(t, envOptions{fakeTime: true})
	e.rt.OnStart = func(in *fakert.Instance) {
		if in.ID() == "a" && e.rt.Starts("a") == 1 {
			in.Terminate(exitError)
		}
	}
	e.cp.setDesired(rec("a", always))
	eventually(t, "restart", func() bool { return e.rt.Starts("a") == 2 })
	e.waitRunning("a")
	if st := e.workerStatus("a"); st.GetState() != pb.InstanceState_INSTANCE_STATE_RUNNING || st.GetRestarts() != 1 {
		t.Fatalf("status %v", st)
	}
}

func TestStopWhileStarting(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	e := startEnv(t, envOptions{})
	e.rt.PrepareHook = func(context.Context, runtimeapi.Artifact) error {
		close(entered)
		<-release
		return nil
	}
	e.cp.setDesired(rec("a", always))
	<-entered
	e.cp.setDesired()
	eventually(t, "stop requested", func() bool {
		stopping := false
		e.inspect("a", func(in *instance) { stopping = in != nil && in.stopping })
		return stopping
	})
	close(release)
	eventually(t, "a forgotten", func() bool { return e.workerStatus("a") == nil })
	if run := e.rt.Latest("a"); run == nil || !run.Stopped() || e.rt.Running() != 0 {
		t.Fatalf("the run that started during the stop is still running")
	}
	eventually(t, "STOPPED reported", func() bool { return e.cp.status("a").GetState() == pb.InstanceState_INSTANCE_STATE_STOPPED })
}

func TestUnknownKindFailsWithNoRuntime(t *testing.T) {
	e := startEnv(t, envOptions{})
	r := rec("a", always)
	r.Spec.Kind = "container"
	e.cp.setDesired(r)
	eventually(t, "NoRuntime", func() bool { return e.cp.status("a").GetReason() == ReasonNoRuntime })
	if st := e.cp.status("a"); st.GetState() != pb.InstanceState_INSTANCE_STATE_FAILED || !e.idle("a") || e.rt.Starts("a") != 0 {
		t.Fatalf("status %v, starts %d", st, e.rt.Starts("a"))
	}
}

func TestPermanentStartErrorIsNotRetried(t *testing.T) {
	e := startEnv(t, envOptions{})
	e.rt.StartHook = func(runtimeapi.InstanceSpec) error {
		return &runtimeapi.StartError{Exit: runtimeapi.Exit{Reason: runtimeapi.ReasonInvalid, Message: "bad magic", Permanent: true}}
	}
	e.cp.setDesired(rec("a", always))
	eventually(t, "InvalidModule", func() bool { return e.workerStatus("a").GetReason() == runtimeapi.ReasonInvalid })
	if st := e.workerStatus("a"); st.GetState() != pb.InstanceState_INSTANCE_STATE_FAILED || st.GetExited() || !e.idle("a") {
		t.Fatalf("status %v", st)
	}
}

func TestStatusesAreBatched(t *testing.T) {
	const n = 50
	e := startEnv(t, envOptions{fakeTime: true, config: func(c *Config) { c.StatusBatchInterval = 100 * time.Millisecond }})
	var recs []*pb.Instance
	for i := range n {
		recs = append(recs, rec(fmt.Sprintf("i%02d", i), never))
	}
	e.cp.setDesired(recs...)
	for i := range n {
		e.waitRunning(fmt.Sprintf("i%02d", i))
	}
	// 100 changes so far (STARTING, RUNNING), none sent: the batch waits
	// for its interval on the fake clock.
	eventually(t, "the batch timer", func() bool { return e.clock.hasPending(100 * time.Millisecond) })
	if c := e.cp.reportCount(); c != 0 {
		t.Fatalf("%d reports before the interval passed", c)
	}
	e.clock.Advance(100 * time.Millisecond)
	eventually(t, "one report", func() bool { return e.cp.reportCount() == 1 })
	if got := len(e.cp.reportsCopy()[0].GetStatuses()); got != n {
		t.Fatalf("first report carries %d statuses, want %d (latest per instance)", got, n)
	}
	for i := range n {
		if st := e.cp.status(fmt.Sprintf("i%02d", i)); st.GetState() != pb.InstanceState_INSTANCE_STATE_RUNNING {
			t.Fatalf("reported %v, want RUNNING", st)
		}
	}

	for i := range 10 {
		e.rt.Latest(fmt.Sprintf("i%02d", i)).Terminate(exitError)
	}
	eventually(t, "the batch timer", func() bool { return e.clock.hasPending(100 * time.Millisecond) })
	e.clock.Advance(100 * time.Millisecond)
	eventually(t, "second report", func() bool { return e.cp.reportCount() == 2 })
	if got := len(e.cp.reportsCopy()[1].GetStatuses()); got != 10 {
		t.Fatalf("second report carries %d statuses, want 10", got)
	}
	if st := e.cp.status("i00"); st.GetState() != pb.InstanceState_INSTANCE_STATE_FAILED || st.GetExitCode() != 3 {
		t.Fatalf("reported %v", st)
	}
}

func TestFullBatchDoesNotWaitForTheInterval(t *testing.T) {
	e := startEnv(t, envOptions{fakeTime: true, worker: func(w *Worker) { w.statuses = newStatusBatcher(10) }})
	var recs []*pb.Instance
	for i := range 25 {
		recs = append(recs, rec(fmt.Sprintf("i%02d", i), never))
	}
	e.cp.setDesired(recs...)
	// Without the clock moving, full batches of 10 go out on their own.
	eventually(t, "full batches", func() bool { return e.cp.reportCount() >= 2 })
	for _, b := range e.cp.reportsCopy() {
		if len(b.GetStatuses()) > 10 {
			t.Fatalf("a batch of %d, want at most 10", len(b.GetStatuses()))
		}
	}
}

func TestStatusBatcherKeepsTheLatest(t *testing.T) {
	b := newStatusBatcher(3)
	st := func(id string, state pb.InstanceState) *pb.InstanceStatus {
		return &pb.InstanceStatus{Id: id, State: state}
	}
	b.add(st("a", pb.InstanceState_INSTANCE_STATE_STARTING))
	b.add(st("a", pb.InstanceState_INSTANCE_STATE_RUNNING))
	b.add(st("b", pb.InstanceState_INSTANCE_STATE_RUNNING))
	select {
	case <-b.full:
		t.Fatal("full with 2 of 3")
	default:
	}
	batch := b.take()
	if len(batch) != 2 || b.len() != 0 {
		t.Fatalf("took %d, %d left", len(batch), b.len())
	}
	// A failed send is put back, but never over a newer status.
	b.add(st("a", pb.InstanceState_INSTANCE_STATE_FAILED))
	b.putBack(batch)
	for _, s := range b.take() {
		if s.GetId() == "a" && s.GetState() != pb.InstanceState_INSTANCE_STATE_FAILED {
			t.Fatalf("putBack overwrote a newer status: %v", s)
		}
	}
	b.addAll([]*pb.InstanceStatus{st("x", 1), st("y", 1), st("z", 1), st("w", 1)})
	select {
	case <-b.full:
	default:
		t.Fatal("not full with 4 of 3")
	}
	if got := len(b.take()); got != 3 {
		t.Fatalf("took %d, want at most 3", got)
	}
}

// TestInstancesAreCheap holds thousands of instances and checks the worker's
// own heap cost per instance (the runtime's is not counted: it is fake).
func TestInstancesAreCheap(t *testing.T) {
	n := 10000
	if testing.Short() || raceEnabled {
		n = 2000
	}
	e := startEnv(t, envOptions{config: func(c *Config) { c.Logger = discardLogger() }})
	recs := make([]*pb.Instance, n)
	for i := range recs {
		recs[i] = rec(fmt.Sprintf("inst-%05d", i), always)
	}
	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	e.cp.setDesired(recs...)
	eventually(t, "all running", func() bool { return e.rt.Running() == n })
	eventually(t, "all reported", func() bool {
		e.cp.mu.Lock()
		defer e.cp.mu.Unlock()
		return len(e.cp.latest) == n
	})
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	perInstance := (int64(after.HeapAlloc) - int64(before.HeapAlloc)) / int64(n)
	t.Logf("%d instances: %d bytes of heap each (worker, fake runtime and fake control plane together), %d goroutines",
		n, perInstance, runtime.NumGoroutine())
	if perInstance > 16<<10 {
		t.Fatalf("%d bytes of heap per instance, want <= 16 KiB", perInstance)
	}
	if g := runtime.NumGoroutine(); g > 200 {
		t.Fatalf("%d goroutines for %d instances: supervision must not take a goroutine each", g, n)
	}
	if open := e.w.logs.OpenFiles(); open != 0 {
		t.Fatalf("%d log files open with no output written", open)
	}
}
