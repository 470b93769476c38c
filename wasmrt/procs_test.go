package wasmrt

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// waitRunning waits until n guests run Wasm code, failing the test after
// the safety timeout.
func waitRunning(t *testing.T, n int64) {
	t.Helper()
	deadline := time.Now().Add(safetyTimeout)
	for guestProcs.running.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d guests running Wasm code, want %d", guestProcs.running.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// Busy guests each hold a P of their own beside the Ps the process had
// without them, so that the rest of the process never queues behind them;
// a sleeping guest holds none, and once the guests are gone the process
// has its own GOMAXPROCS back.
func TestBusyGuestsEachHoldAP(t *testing.T) {
	guestProcs.shrink() // what earlier tests' guests left
	base := runtime.GOMAXPROCS(0)
	r := newTestRuntime(t, Config{})

	sleeper := newOutput()
	ticker, err := r.Start(context.Background(), runtimeapi.InstanceSpec{ID: "ticker", Artifact: testArtifact(t, "ticker.wasm"), Stdout: sleeper})
	if err != nil {
		t.Fatal(err)
	}
	sleeper.waitFor(t, "tick 2\n")
	waitRunning(t, 0) // it spends its time asleep

	busy := 2*procChunk + 1
	var loops []runtimeapi.Instance
	for i := range busy {
		inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{ID: fmt.Sprint("loop", i), Artifact: testArtifact(t, "loop.wasm")})
		if err != nil {
			t.Fatal(err)
		}
		loops = append(loops, inst)
	}
	waitRunning(t, int64(busy))
	// The last guest to enter resizes on its way into _start.
	deadline := time.Now().Add(safetyTimeout)
	for runtime.GOMAXPROCS(0) < base+busy && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := runtime.GOMAXPROCS(0); got < base+busy {
		t.Errorf("GOMAXPROCS %d with %d busy guests, want at least %d (%d without guests)", got, busy, base+busy, base)
	}
	sleeper.waitFor(t, "tick 4\n") // the sleeper still wakes

	for _, inst := range loops {
		stopInstance(t, inst)
	}
	stopInstance(t, ticker)
	waitRunning(t, 0)
	guestProcs.shrink() // what lowerAfter would do
	if got := runtime.GOMAXPROCS(0); got != base {
		t.Errorf("GOMAXPROCS %d once the guests are gone, want the process's own %d", got, base)
	}
}

// Guests waiting in the run queue hold no P and do not count: a burst of
// guests far more than the Ps (requests at once on a loaded node) grows
// GOMAXPROCS by a chunk past the Ps there are at a check, not to the
// count of guests (up to its cap).
func TestWaitingGuestsDoNotCountAsHoldingAP(t *testing.T) {
	var p procReserve
	p.grow() // the first check learns the process's Ps
	defer func() {
		p.running.Store(0)
		p.shrink()
	}()
	// A check armed once every guest of the burst had entered: each has
	// been running, or waiting to, since, as when a burst outlasts a check.
	p.growing.Store(true) // no timer: this test runs the check
	burst := 4*maxGuestProcs + 1
	for range burst {
		p.entered.Add(1)
		p.running.Add(1)
	}
	p.armed.Store(p.entered.Load())
	before := max(p.procs, p.base)
	p.grow()
	p.mu.Lock()
	procs, base := p.procs, p.base
	p.mu.Unlock()
	if want := base + roundUp(before, procChunk); procs != want {
		t.Errorf("GOMAXPROCS set to %d with %d guests on %d Ps (%d without guests), want %d: a P each for no more guests than there are Ps",
			procs, burst, before, base, want)
	}
}
