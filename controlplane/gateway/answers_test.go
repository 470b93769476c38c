package gateway

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/httptrigger"
)

func TestFailureEventsAreRateLimitedPerWorkload(t *testing.T) {
	var f failureEvents
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	type step struct {
		workload string
		at       time.Duration
		record   bool
		since    int
	}
	for i, s := range []step{
		{"a", 0, true, 0},            // the first at once
		{"a", time.Second, false, 0}, // then held back ...
		{"b", time.Second, true, 0},  // (another workload has its own count)
		{"a", eventInterval - time.Nanosecond, false, 0},
		{"a", eventInterval, true, 2},                // ... and counted in the next
		{"a", eventInterval + time.Second, false, 0}, //
		{"a", 5 * eventInterval, true, 1},
	} {
		record, since := f.admit(s.workload, t0.Add(s.at))
		if record != s.record || since != s.since {
			t.Errorf("step %d (%s at %s): admit = %v, %d; want %v, %d", i, s.workload, s.at, record, since, s.record, s.since)
		}
	}
}

func TestFailureHeaderRoundTrip(t *testing.T) {
	v := httptrigger.FormatFailure("Trap", "trapped: wasm error: unreachable\r\nwasm stack trace:\x00 .$0()")
	if strings.ContainsAny(v, "\r\n\x00") {
		t.Errorf("FormatFailure left control characters: %q", v)
	}
	outcome, detail := httptrigger.ParseFailure(v)
	if outcome != "Trap" || detail != "trapped: wasm error: unreachable  wasm stack trace:  .$0()" {
		t.Errorf("ParseFailure(%q) = %q, %q", v, outcome, detail)
	}
	long := httptrigger.FormatFailure("Malformed", strings.Repeat("é", 4096))
	if len(long) > 1200 || !strings.HasSuffix(long, "...") || !strings.HasPrefix(long, "Malformed: é") {
		t.Errorf("a long detail: %d bytes, %.40q...", len(long), long)
	}
}

// syncLog is a log the test reads while the gateway writes it.
type syncLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// A worker that cannot be reached is the gateway's own 502: the client
// learns neither the worker's address nor the error; the log and the
// workload's event do, under the request's id.
func TestAnUnreachableWorkerIsA502WithoutItsDetail(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := lis.Addr().String()
	_ = lis.Close() // nothing listens there any more

	k := newCluster(t)
	k.node("n1", dead)
	fn := function("fn", "/fn", "")
	k.put(store.WorkloadsPrefix+"fn", fn)
	k.replica(fn, "fn-a", "n1")
	k.flush()
	var logs syncLog
	type event struct{ object, reason, message string }
	events := make(chan event, 10)
	g := New(Config{Store: k.st, Cache: k.c, Member: "m1", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Record: func(_ context.Context, object, reason, message string) { events <- event{object, reason, message} }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	eventually(t, "fn routed", func() bool { r := g.table.Load().match("gw", "/fn"); return r != nil && len(r.replicas) == 1 })

	w := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, "http://gw/fn", nil)
	req.Header.Set(HeaderRequestID, "chosen-by-the-client")
	g.ServeHTTP(w, req)
	id := w.Header().Get(HeaderRequestID)
	body := w.Body.String()
	if w.Code != http.StatusBadGateway || body != "502 bad gateway: the function gave no valid answer (request id "+id+")\n" {
		t.Errorf("got %d %q, want 502 with the request id", w.Code, body)
	}
	if id == "" || id == "chosen-by-the-client" || len(id) != 16 {
		t.Errorf("request id %q: want the gateway's own", id)
	}
	select {
	case ev := <-events:
		if ev.object != "workload/fn" || ev.reason != "FunctionFailed" || !strings.Contains(ev.message, dead) || !strings.Contains(ev.message, id) {
			t.Errorf("event %+v: want FunctionFailed on workload/fn with the worker's address and the request id", ev)
		}
	case <-time.After(10 * time.Second): // a safety net
		t.Fatal("no event recorded")
	}
	if line := logs.String(); !strings.Contains(line, "request="+id) || !strings.Contains(line, dead) || !strings.Contains(line, "outcome=Unreachable") {
		t.Errorf("the log does not hold the failure under its id:\n%s", line)
	}
	// A second failure right after is logged, not recorded.
	g.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "http://gw/fn", nil))
	if n := strings.Count(logs.String(), "outcome=Unreachable"); n != 2 {
		t.Errorf("%d failures logged, want 2", n)
	}
	// (Held back when it failed: no recording was even started.)
	if len(events) != 0 {
		t.Errorf("a second event within %s: %+v", eventInterval, <-events)
	}
}
