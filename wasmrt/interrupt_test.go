package wasmrt

import (
	"context"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// TestBusyFunctionsLeaveRoomForGCAndOthers holds more guests in a busy loop
// (loop.wasm, which calls no import) than the process has Ps, with no
// timeout, and checks that meanwhile the Go garbage collector stops the
// world and completes, other functions answer, and a busy guest with a
// short timeout is stopped at it; then that canceling the busy ones stops
// them. Compiled guest code leaves for Go only at its loops' interrupt
// checks (once every experimental.DefaultInterruptCheckInterval back-edges,
// third_party/wazero/PATCHES.md): Go cannot preempt machine code, so a
// guest that never left would hold its P, and runtime.GC() (which stops
// every P) with every other goroutine would wait for it forever.
//
// Not parallel: the busy guests must be the ones holding the Ps.
func TestBusyFunctionsLeaveRoomForGCAndOthers(t *testing.T) {
	r := newTestRuntime(t, Config{})
	loop := prepareFunction(t, r, "loop.wasm")
	greet := prepareFunction(t, r, "greet.wasm", "GREETING=hi")

	busy := runtime.GOMAXPROCS(0) + 1
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ended := make(chan runtimeapi.FunctionResult, busy)
	before := guestProcs.running.Load()
	for range busy {
		go func() {
			ended <- loop.fn.Serve(ctx, httptest.NewRecorder(), &runtimeapi.FunctionRequest{
				HTTP: httptest.NewRequest("GET", "/fn", nil), ScriptName: "/fn", RemoteAddr: "192.0.2.7:5555",
			})
		}()
	}
	deadline := time.Now().Add(safetyTimeout)
	for guestProcs.running.Load() < before+int64(busy) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d busy guests running after %s", guestProcs.running.Load()-before, busy, safetyTimeout)
		}
		time.Sleep(time.Millisecond)
	}

	gcDone := make(chan struct{})
	go func() {
		runtime.GC()
		close(gcDone)
	}()
	// One more busy guest, with a short timeout, is stopped at it.
	rec, res, logs := loop.serve(httptest.NewRequest("GET", "/fn", nil), nil, 50*time.Millisecond)
	if res.Outcome != runtimeapi.OutcomeTimeout || rec.Code != 504 || !strings.Contains(logs, "stopped at its timeout of 50ms") {
		t.Errorf("busy guest with a 50ms timeout: %d %+v, logs %q", rec.Code, res, logs)
	}
	for i := range 20 {
		if rec, res, _ := greet.serve(httptest.NewRequest("GET", "/fn?who=x", nil), nil, 0); rec.Code != 200 || rec.Body.String() != "hi, x!\n" {
			t.Fatalf("greet %d while guests are busy: %d %+v %q", i, rec.Code, res, rec.Body.String())
		}
	}
	select {
	case <-gcDone:
	case res := <-ended:
		t.Fatalf("a busy guest with no timeout ended before runtime.GC() returned: %+v", res)
	case <-time.After(safetyTimeout):
		t.Fatalf("runtime.GC() did not return within %s while guests were busy", safetyTimeout)
	}
	select {
	case res := <-ended:
		t.Fatalf("a busy guest with no timeout ended on its own: %+v", res)
	default:
	}

	cancel()
	for range busy {
		select {
		case res := <-ended:
			if res.Outcome != runtimeapi.OutcomeCanceled {
				t.Errorf("busy guest after cancel: %+v, want outcome %s", res, runtimeapi.OutcomeCanceled)
			}
		case <-time.After(safetyTimeout):
			t.Fatalf("busy guests still running %s after their context was canceled", safetyTimeout)
		}
	}
}
