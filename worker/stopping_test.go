package worker

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/internal/fakert"
)

// terminatingRec is rec marked terminating by the control plane.
func terminatingRec(id string) *pb.Instance {
	r := rec(id, 0)
	r.TerminatingUnixNano = time.Now().UnixNano()
	return r
}

// TestTerminatingInstanceIsStoppedAndReportedStopped: an instance the
// control plane marks terminating stays in the node's set until its node
// reports it gone; the worker stops it and says so, and starts nothing
// for it again.
func TestTerminatingInstanceIsStoppedAndReportedStopped(t *testing.T) {
	e := startEnv(t, envOptions{})
	e.cp.setDesired(rec("a", 0), rec("b", 0))
	a := e.waitRunning("a")
	e.waitRunning("b")

	e.cp.setDesired(terminatingRec("a"), rec("b", 0))
	eventually(t, "a reported stopped", func() bool { return e.cp.status("a").GetState() == pb.InstanceState_INSTANCE_STATE_STOPPED })
	if !a.Stopped() {
		t.Fatal("a was reported stopped but its run was not stopped")
	}
	if e.workerStatus("a") != nil {
		t.Fatal("the worker still holds a")
	}
	// Another change of the set (and the pass after the stop) starts
	// nothing for a: it stays terminating until the record goes.
	e.cp.setDesired(terminatingRec("a"), rec("b", 0), rec("c", 0))
	e.waitRunning("c")
	if n := e.rt.Starts("a"); n != 1 {
		t.Fatalf("a started %d times, want once", n)
	}
	if n := e.rt.Starts("b"); n != 1 || e.rt.Latest("b").Exited() {
		t.Fatalf("b: %d starts, exited %v; want one run, still running", n, e.rt.Latest("b").Exited())
	}
}

// TestTerminatingInstanceNeverRunIsReportedStopped: a worker that gets an
// instance already terminating (it restarted while the instance stopped)
// does not start it, and reports it stopped, so that the control plane
// can let it go.
func TestTerminatingInstanceNeverRunIsReportedStopped(t *testing.T) {
	e := startEnv(t, envOptions{})
	e.cp.setDesired(terminatingRec("gone"), rec("b", 0))
	e.waitRunning("b")
	eventually(t, "gone reported stopped", func() bool {
		return e.cp.status("gone").GetState() == pb.InstanceState_INSTANCE_STATE_STOPPED
	})
	if n := e.rt.Starts("gone"); n != 0 {
		t.Fatalf("a terminating instance was started %d times", n)
	}
}

// TestStopsRunInParallel: instances that leave the set together are all
// being stopped at once, however long each takes to end (a container's
// grace), rather than a few at a time with the rest waiting behind them.
func TestStopsRunInParallel(t *testing.T) {
	const n = 40 // more than the 16 stops the worker once ran at a time
	var stopping atomic.Int32
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	e := startEnv(t, envOptions{worker: func(w *Worker) {
		w.cfg.Runtimes[0].(*fakert.Runtime).StopHook = func(*fakert.Instance) {
			stopping.Add(1)
			<-release
		}
	}})
	defer free()
	var recs []*pb.Instance
	for i := range n {
		recs = append(recs, rec(fmt.Sprintf("i%02d", i), 0))
	}
	e.cp.setDesired(recs...)
	for _, r := range recs {
		e.waitRunning(r.GetId())
	}

	e.cp.setDesired()
	eventually(t, fmt.Sprintf("all %d instances being stopped at once", n), func() bool { return stopping.Load() == n })
	free()
	eventually(t, "every instance reported stopped", func() bool {
		for _, r := range recs {
			if e.cp.status(r.GetId()).GetState() != pb.InstanceState_INSTANCE_STATE_STOPPED {
				return false
			}
		}
		return true
	})
}
