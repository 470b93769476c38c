package funcserver

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// safetyTimeout ends a test that hangs; it asserts nothing about speed.
const safetyTimeout = 30 * time.Second

// fakeFunction answers with what it saw, optionally after being released.
type fakeFunction struct {
	hold    chan struct{} // if set, each call waits for a token or its ctx
	started chan struct{} // gets a token when a call starts
	closed  atomic.Int32
	trunc   bool

	mu   sync.Mutex
	seen []*runtimeapi.FunctionRequest
}

func (f *fakeFunction) Serve(ctx context.Context, w http.ResponseWriter, req *runtimeapi.FunctionRequest) runtimeapi.FunctionResult {
	f.mu.Lock()
	f.seen = append(f.seen, req)
	f.mu.Unlock()
	if f.started != nil {
		f.started <- struct{}{}
	}
	if f.hold != nil {
		select {
		case <-f.hold:
		case <-ctx.Done():
			// As the runtimes do: a canceled call writes nothing.
			return runtimeapi.FunctionResult{Status: 499, Outcome: runtimeapi.OutcomeCanceled}
		}
	}
	body, _ := io.ReadAll(req.Body)
	w.Header().Set("X-Headers", strings.Join(headerNames(req.HTTP.Header), ","))
	w.WriteHeader(200)
	_, _ = io.WriteString(w, req.ScriptName+"|"+req.PathInfo+"|"+req.RemoteAddr+"|"+string(body))
	if f.trunc {
		w.(http.Flusher).Flush() // the headers are gone: only aborting can tell the client
	}
	return runtimeapi.FunctionResult{Status: 200, Outcome: runtimeapi.OutcomeOK, Truncated: f.trunc}
}

func (f *fakeFunction) Close() { f.closed.Add(1) }

func headerNames(h http.Header) []string {
	var out []string
	for k := range h {
		out = append(out, k)
	}
	return out
}

func newServer(t *testing.T, fn *fakeFunction, set httptrigger.Settings) (*Server, *Replica, *httptest.Server) {
	t.Helper()
	s := New(nil)
	if set.Timeout == 0 {
		set.Timeout = safetyTimeout
	}
	if set.MaxBody == 0 {
		set.MaxBody = 1 << 20
	}
	if set.Concurrency == 0 {
		set.Concurrency = 10
	}
	if set.Queue == 0 {
		set.Queue = 10
	}
	rep, err := s.Add(ReplicaSpec{ID: "fn-abcde", Workload: "fn", Settings: set, Function: fn})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, rep, ts
}

func send(t *testing.T, ts *httptest.Server, path, instance string, body io.Reader) *http.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+path, body)
	if instance != "" {
		req.Header.Set(httptrigger.HeaderInstance, instance)
	}
	req.Header.Set(httptrigger.HeaderRoute, "/fn")
	req.Header.Set(httptrigger.HeaderRemoteAddr, "192.0.2.1:99")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestServesTheNamedReplica(t *testing.T) {
	fn := &fakeFunction{}
	_, _, ts := newServer(t, fn, httptrigger.Settings{})
	resp := send(t, ts, "/fn/a/b", "fn-abcde", strings.NewReader("body"))
	if got := readAll(t, resp); resp.StatusCode != 200 || got != "/fn|/a/b|192.0.2.1:99|body" {
		t.Fatalf("got %d %q", resp.StatusCode, got)
	}
	if h := resp.Header.Get("X-Headers"); strings.Contains(h, "X-Wasmorch") {
		t.Errorf("the function saw the gateway's headers: %s", h)
	}
	if resp := send(t, ts, "/fn", "", nil); resp.StatusCode != 404 {
		t.Errorf("without a replica header: %d, want 404", resp.StatusCode)
	}
	resp = send(t, ts, "/fn", "fn-other", nil)
	if resp.StatusCode != 503 || resp.Header.Get(httptrigger.HeaderUnavailable) != httptrigger.UnavailableNoReplica || resp.Header.Get("Retry-After") == "" {
		t.Errorf("unknown replica: %d %v", resp.StatusCode, resp.Header)
	}
}

func TestBodyOverTheLimitIs413(t *testing.T) {
	fn := &fakeFunction{}
	_, _, ts := newServer(t, fn, httptrigger.Settings{MaxBody: 10})
	resp := send(t, ts, "/fn", "fn-abcde", strings.NewReader(strings.Repeat("x", 11)))
	failure := resp.Header.Get(httptrigger.HeaderFailure)
	if got := readAll(t, resp); resp.StatusCode != 413 || strings.Contains(got, "limit") || failure != "TooLarge: the body of 11 bytes is over the function's limit of 10 bytes" {
		t.Errorf("got %d %q, failure %q", resp.StatusCode, got, failure)
	}
	if len(fn.seen) != 0 {
		t.Errorf("the function ran for a body over the limit")
	}
}

func TestSaturationQueuesThenRefuses(t *testing.T) {
	fn := &fakeFunction{hold: make(chan struct{}), started: make(chan struct{}, 10)}
	s, _, ts := newServer(t, fn, httptrigger.Settings{Concurrency: 1, Queue: 1})
	results := make(chan int, 2)
	for range 2 {
		go func() {
			resp := send(t, ts, "/fn", "fn-abcde", nil)
			readAll(t, resp)
			results <- resp.StatusCode
		}()
	}
	<-fn.started // one runs
	for i := 0; s.InFlight() < 2; i++ {
		if i > 10000 {
			t.Fatal("the second request was never queued")
		}
		time.Sleep(time.Millisecond)
	}
	resp := send(t, ts, "/fn", "fn-abcde", nil)
	readAll(t, resp)
	if resp.StatusCode != 503 || resp.Header.Get(httptrigger.HeaderUnavailable) != httptrigger.UnavailableSaturated || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third request: %d %v, want 503 saturated with Retry-After", resp.StatusCode, resp.Header)
	}
	fn.hold <- struct{}{}
	fn.hold <- struct{}{} // the queued one runs once the first is done
	for range 2 {
		if code := <-results; code != 200 {
			t.Errorf("held request ended with %d", code)
		}
	}
}

func TestStopDrainsThenClosesTheFunction(t *testing.T) {
	fn := &fakeFunction{hold: make(chan struct{}), started: make(chan struct{}, 1)}
	_, rep, ts := newServer(t, fn, httptrigger.Settings{})
	result := make(chan int, 1)
	go func() {
		resp := send(t, ts, "/fn", "fn-abcde", nil)
		readAll(t, resp)
		result <- resp.StatusCode
	}()
	<-fn.started
	stopped := make(chan runtimeapi.Exit, 1)
	go func() { stopped <- rep.Stop(context.Background(), safetyTimeout) }()
	// New requests are refused while the one in flight finishes (once
	// Stop has begun: a request sent before would be admitted and wait).
	waitFor(t, "the replica stopping", func() bool {
		rep.mu.Lock()
		defer rep.mu.Unlock()
		return rep.stopping
	})
	resp := send(t, ts, "/fn", "fn-abcde", nil)
	readAll(t, resp)
	if resp.StatusCode != 503 {
		t.Fatalf("a stopping replica took a request: %d", resp.StatusCode)
	}
	if fn.closed.Load() != 0 {
		t.Fatal("the function was closed with a request in flight")
	}
	fn.hold <- struct{}{}
	if code := <-result; code != 200 {
		t.Errorf("in-flight request ended with %d", code)
	}
	exit := <-stopped
	if exit.Reason != runtimeapi.ReasonStopped || fn.closed.Load() != 1 {
		t.Errorf("exit %+v, closed %d", exit, fn.closed.Load())
	}
	select {
	case <-rep.Done():
	default:
		t.Error("Done not closed after Stop")
	}
}

// TestStopAfterGraceEndsRequests: a request still running when the
// replica's stop grace ends is cut off, and answered 503 (saying so, for
// the gateway to retry it elsewhere if it may): never a 200 with no body.
func TestStopAfterGraceEndsRequests(t *testing.T) {
	fn := &fakeFunction{hold: make(chan struct{}), started: make(chan struct{}, 1)}
	_, rep, ts := newServer(t, fn, httptrigger.Settings{})
	result := make(chan *http.Response, 1)
	body := make(chan string, 1)
	go func() {
		resp := send(t, ts, "/fn", "fn-abcde", nil)
		body <- readAll(t, resp)
		result <- resp
	}()
	<-fn.started
	rep.Stop(context.Background(), 0)
	resp, got := <-result, <-body
	failure := resp.Header.Get(httptrigger.HeaderFailure)
	if resp.StatusCode != 503 || resp.Header.Get(httptrigger.HeaderUnavailable) != httptrigger.UnavailableStopped ||
		!strings.HasPrefix(failure, outcomeStopped+": replica fn-abcde stopped before the function answered") {
		t.Errorf("request cut by Stop: %d %q %q %q, want 503 %q saying the replica stopped", resp.StatusCode,
			resp.Header.Get(httptrigger.HeaderUnavailable), failure, got, httptrigger.UnavailableStopped)
	}
	if fn.closed.Load() != 1 {
		t.Error("function not closed")
	}
}

func TestTruncatedResponseIsAborted(t *testing.T) {
	fn := &fakeFunction{trunc: true}
	_, _, ts := newServer(t, fn, httptrigger.Settings{})
	resp := send(t, ts, "/fn", "fn-abcde", nil)
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Error("a truncated response read as complete")
	}
}
