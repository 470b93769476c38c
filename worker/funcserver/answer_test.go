package funcserver

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// scripted is a Function that answers as its script says.
type scripted func(w http.ResponseWriter) runtimeapi.FunctionResult

func (f scripted) Serve(_ context.Context, w http.ResponseWriter, _ *runtimeapi.FunctionRequest) runtimeapi.FunctionResult {
	return f(w)
}

func (scripted) Close() {}

func serveScripted(t *testing.T, f scripted) (*http.Response, string) {
	t.Helper()
	return serveScriptedTo(t, &recorder{header: http.Header{}}, f)
}

func serveScriptedTo(t *testing.T, rec *recorder, f scripted) (*http.Response, string) {
	t.Helper()
	s := New(nil)
	if _, err := s.Add(ReplicaSpec{ID: "fn-abcde", Workload: "fn", Function: f,
		Settings: httptrigger.Settings{Timeout: safetyTimeout, MaxBody: 1 << 20, Concurrency: 1, Queue: 1}}); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "/fn", nil)
	req.Header.Set(httptrigger.HeaderInstance, "fn-abcde")
	func() {
		defer func() {
			if r := recover(); r != nil && r != http.ErrAbortHandler {
				panic(r)
			}
		}()
		s.ServeHTTP(rec, req)
	}()
	resp := &http.Response{StatusCode: rec.code, Header: rec.header, Body: io.NopCloser(strings.NewReader(rec.body.String()))}
	return resp, rec.body.String()
}

// recorder is an http.ResponseWriter that keeps what it is given and
// whether it was flushed.
type recorder struct {
	header  http.Header
	code    int
	body    strings.Builder
	flushed bool
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.code == 0 {
		r.code = 200
	}
	return r.body.Write(p)
}
func (r *recorder) Flush() { r.flushed = true }

// A runtime answers a failed call itself, with the detail in its body:
// the server replaces that answer by its own, the detail in HeaderFailure
// for the gateway.
func TestAFailedCallsDetailGoesInTheFailureHeader(t *testing.T) {
	resp, body := serveScripted(t, func(w http.ResponseWriter) runtimeapi.FunctionResult {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(500)
		_, _ = io.WriteString(w, "500 Internal Server Error: trapped: wasm error: unreachable\n")
		return runtimeapi.FunctionResult{Status: 500, Outcome: runtimeapi.OutcomeTrap, Message: "trapped: wasm error: unreachable\nwasm stack trace: ..."}
	})
	if resp.StatusCode != 500 || strings.Contains(body, "wasm") {
		t.Errorf("got %d %q, want 500 without the detail", resp.StatusCode, body)
	}
	if got, want := resp.Header.Get(httptrigger.HeaderFailure), "Trap: trapped: wasm error: unreachable wasm stack trace: ..."; got != want {
		t.Errorf("%s = %q, want %q", httptrigger.HeaderFailure, got, want)
	}
}

// What a function answers is its own, errors included; only the headers
// that are not its to send are dropped.
func TestAFunctionsOwnAnswerPassesWithoutForeignHeaders(t *testing.T) {
	resp, body := serveScripted(t, func(w http.ResponseWriter) runtimeapi.FunctionResult {
		h := w.Header()
		h.Set("X-Wasmorch-Unavailable", httptrigger.UnavailableNoReplica) // would make the gateway call it again
		h.Set(httptrigger.HeaderFailure, "Trap: forged")
		h.Set("Connection", "X-Private")
		h.Set("X-Private", "hop")
		h.Set("Transfer-Encoding", "gzip")
		h.Set("Keep-Alive", "timeout=600")
		h.Set("Upgrade", "h2c")
		h.Set("X-Own", "kept")
		w.WriteHeader(503)
		_, _ = io.WriteString(w, "down for maintenance")
		return runtimeapi.FunctionResult{Status: 503, Outcome: runtimeapi.OutcomeOK}
	})
	if resp.StatusCode != 503 || body != "down for maintenance" || resp.Header.Get("X-Own") != "kept" {
		t.Errorf("got %d %q %v, want the function's 503", resp.StatusCode, body, resp.Header)
	}
	for _, name := range []string{"X-Wasmorch-Unavailable", httptrigger.HeaderFailure, "Connection", "X-Private", "Transfer-Encoding", "Keep-Alive", "Upgrade"} {
		if v := resp.Header.Get(name); v != "" {
			t.Errorf("the function's %s: %q went out", name, v)
		}
	}
}

// An error answer that streams goes out as it is written.
func TestAStreamedErrorAnswerIsNotHeld(t *testing.T) {
	rec := &recorder{header: http.Header{}}
	var whileRunning string
	resp, body := serveScriptedTo(t, rec, func(w http.ResponseWriter) runtimeapi.FunctionResult {
		w.WriteHeader(500)
		_, _ = io.WriteString(w, "first")
		w.(http.Flusher).Flush()
		whileRunning = rec.body.String()
		return runtimeapi.FunctionResult{Status: 500, Outcome: runtimeapi.OutcomeTrap, Message: "later", Truncated: true}
	})
	if resp.StatusCode != 500 || whileRunning != "first" || !rec.flushed || body != "first" {
		t.Errorf("got %d %q (%q and flushed %v while the call ran), want the 500 passed on as it was flushed", resp.StatusCode, body, whileRunning, rec.flushed)
	}
	if v := resp.Header.Get(httptrigger.HeaderFailure); v != "" {
		t.Errorf("a streamed answer got %s %q", httptrigger.HeaderFailure, v)
	}
}
