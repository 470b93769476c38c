package funcserver

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// healthFunction answers its health path with status, or traps.
type healthFunction struct {
	status int
	trap   bool
	hold   chan struct{}
	seen   chan string // "script|pathinfo|host" of each call
}

func (f *healthFunction) Serve(ctx context.Context, w http.ResponseWriter, req *runtimeapi.FunctionRequest) runtimeapi.FunctionResult {
	if f.seen != nil {
		f.seen <- req.ScriptName + "|" + req.PathInfo + "|" + req.HTTP.Host
	}
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
			return runtimeapi.FunctionResult{Outcome: runtimeapi.OutcomeCanceled}
		}
	}
	if f.trap {
		return runtimeapi.FunctionResult{Status: 500, Outcome: runtimeapi.OutcomeTrap, Message: "wasm error: unreachable"}
	}
	w.WriteHeader(f.status)
	fmt.Fprintf(w, "\nstatus %d\nmore\n", f.status)
	return runtimeapi.FunctionResult{Status: f.status, Outcome: runtimeapi.OutcomeOK}
}

func (f *healthFunction) Close() {}

func probeReplica(t *testing.T, fn runtimeapi.Function, set httptrigger.Settings) *Replica {
	t.Helper()
	s := New(nil)
	set.Timeout = safetyTimeout
	set.Concurrency, set.Queue = 1, 1
	rep, err := s.Add(ReplicaSpec{ID: "fn-1", Workload: "fn", Settings: set, Function: fn})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestProbeRequestsTheHealthPathUnderTheRoute(t *testing.T) {
	for _, tt := range []struct {
		name   string
		fn     *healthFunction
		ok     bool
		detail string
	}{
		{"200 passes", &healthFunction{status: 200}, true, "GET /greet/healthz: 200 OK"},
		{"302 passes", &healthFunction{status: 302}, true, "GET /greet/healthz: 302 Found"},
		{"503 fails with the body's first line", &healthFunction{status: 503}, false, "GET /greet/healthz: 503 Service Unavailable: status 503"},
		{"a trap fails", &healthFunction{trap: true}, false, "GET /greet/healthz: 500 Internal Server Error (wasm error: unreachable)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn.seen = make(chan string, 1)
			set := httptrigger.Effective(nil)
			set.Route, set.Host, set.HealthPath = "/greet", "api.example.com", "/greet/healthz"
			rep := probeReplica(t, tt.fn, set)
			res := rep.Probe(context.Background(), time.Minute)
			if res.OK != tt.ok || res.Detail != tt.detail {
				t.Errorf("Probe = %+v, want ok=%v detail %q", res, tt.ok, tt.detail)
			}
			if got := <-tt.fn.seen; got != "/greet|/healthz|api.example.com" {
				t.Errorf("the function saw %q, want script /greet, path info /healthz, host api.example.com", got)
			}
		})
	}
}

// A check that outlasts its timeout fails saying so; a saturated replica
// is still checked (outside admission); a stopping one is not.
func TestProbeTimeoutSaturationAndStop(t *testing.T) {
	fn := &healthFunction{status: 200, hold: make(chan struct{})}
	set := httptrigger.Effective(nil)
	set.Route, set.HealthPath = "/", "/healthz"
	rep := probeReplica(t, fn, set)
	if res := rep.Probe(context.Background(), 20*time.Millisecond); res.OK || !strings.Contains(res.Detail, "GET /healthz: no answer within 20ms") {
		t.Errorf("a check that never answers: %+v", res)
	}

	close(fn.hold)
	// Fill the one slot and the one queue place.
	rep.mu.Lock()
	rep.slots <- struct{}{}
	rep.active++
	rep.mu.Unlock()
	if res := rep.Probe(context.Background(), safetyTimeout); !res.OK {
		t.Errorf("a saturated replica's check: %+v; want it to pass", res)
	}
	rep.release()

	rep.Stop(context.Background(), time.Second)
	if res := rep.Probe(context.Background(), safetyTimeout); res.OK || !strings.Contains(res.Detail, "stopping") {
		t.Errorf("a stopped replica's check: %+v; want it refused", res)
	}
}
