package worker

import (
	"fmt"

	"github.com/wasmorch/wasmorch/internal/resources"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/membudget"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// The node's memory budget (membudget) is its allocatable memory: what it
// registers as its capacity, within which the scheduler places. Every
// instance assigned to the node reserves its memory limit when it first
// starts and holds it until it leaves the node, through its restarts, as
// the scheduler counts it. A Wasm function replica reserves nothing of its
// own: each of its requests holds the function's limit while it runs
// (funcserver), so that a function's memory grows with its concurrency
// only as far as the node has room.
//
// An instance that does not fit is not started: it reports Starting with
// reason InsufficientMemory, and starts when an instance leaving the node
// gives enough back. The scheduler places within the allocatable memory,
// so that happens only while the two disagree: instances that left the
// node's set still stopping, a worker restarted with less memory.

// ReasonInsufficientMemory is the reason of an instance the node's memory
// budget cannot hold yet.
const ReasonInsufficientMemory = "InsufficientMemory"

// ReasonMemoryUnfit is the reason of an instance whose reservation is more
// than the node's whole allocatable memory: it could never start here
// (edge: unfit.go), as when the node's memory was set lower after it was
// placed.
const ReasonMemoryUnfit = "MemoryUnfit"

// memoryReservation is what in reserves on the node.
func memoryReservation(in *instance) int64 {
	spec := in.rec.GetSpec()
	if spec == nil || in.rt == nil {
		return 0 // It never runs.
	}
	if spec.GetHttp() != nil && kindOf(spec) == kindWasm && !isWasmService(spec) {
		return 0 // Its requests hold memory, each while it runs.
	}
	return resources.MemoryRequest(spec)
}

// admitMemory takes in's reservation from the node's memory budget, unless
// it holds it already, for a start attempt of in (which is busy). When the
// budget cannot hold it, in is not started: it reports why, waits for
// memory among memoryWaiters, is no longer busy, and admitMemory returns
// false.
func (w *Worker) admitMemory(in *instance) bool {
	n := memoryReservation(in)
	w.memMu.Lock()
	if in.memory > 0 || n == 0 || w.memory.Reserve(n) {
		if in.memory == 0 {
			in.memory = n
		}
		delete(w.memoryWaiters, in)
		w.memMu.Unlock()
		return true
	}
	u := w.memory.Usage()
	if n > u.Total {
		w.memMu.Unlock()
		in.mu.Lock()
		in.busy = false
		stopping := in.stopping
		if !stopping && !w.closing.Load() {
			msg := fmt.Sprintf("the instance reserves %s (its memory limit), more than node %s's whole allocatable memory (%s): it cannot run on this node",
				membudget.FormatBytes(n), w.cfg.NodeName, membudget.FormatBytes(u.Total))
			w.startFailedLocked(in, runtimeapi.Exit{Reason: ReasonMemoryUnfit, Message: msg, Permanent: true}, false)
		}
		in.mu.Unlock()
		if stopping {
			w.enqueueStop(in)
		}
		return false
	}
	w.memoryWaiters[in] = struct{}{}
	w.memMu.Unlock()

	in.mu.Lock()
	in.busy = false
	retry, stopping := in.memoryRetry, in.stopping
	in.memoryRetry = false
	switch {
	case retry:
		w.enqueueStartLocked(in) // Memory came back meanwhile.
	case !stopping && !w.closing.Load():
		msg := fmt.Sprintf("waiting for memory: node %s has %s of its %s of allocatable memory unreserved, and the instance reserves %s (its memory limit); it starts when instances leaving the node give enough back",
			w.cfg.NodeName, membudget.FormatBytes(max(0, u.Total-u.Reserved)), membudget.FormatBytes(u.Total), membudget.FormatBytes(n))
		w.setStatusLocked(in, w.newStatus(in, pb.InstanceState_INSTANCE_STATE_STARTING, ReasonInsufficientMemory, msg))
	}
	in.mu.Unlock()
	if stopping {
		w.enqueueStop(in)
	}
	return false
}

// releaseMemory gives back in's reservation as it leaves the node, and
// lets the instances waiting for memory try again.
func (w *Worker) releaseMemory(in *instance) {
	w.memMu.Lock()
	delete(w.memoryWaiters, in)
	n := in.memory
	in.memory = 0
	var wake []*instance
	if n > 0 {
		w.memory.Unreserve(n)
		for x := range w.memoryWaiters {
			wake = append(wake, x)
		}
		clear(w.memoryWaiters)
	}
	w.memMu.Unlock()
	for _, x := range wake {
		x.mu.Lock()
		if x.busy {
			x.memoryRetry = true // admitMemory sees it when it gives up.
		} else {
			w.enqueueStartLocked(x)
		}
		x.mu.Unlock()
	}
}

// MemoryUsage is what the node's memory budget holds now: the
// instances' reservations and the function requests' memory.
func (w *Worker) MemoryUsage() membudget.Usage { return w.memory.Usage() }
