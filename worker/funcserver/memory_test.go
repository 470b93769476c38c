package funcserver

import (
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	"github.com/wasmorch/wasmorch/worker/membudget"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

const MiB = 1 << 20

// memoryServer serves one replica of fn whose requests each hold 10 MiB
// of a 30 MiB budget that lets waitQueue requests wait.
func memoryServer(t *testing.T, fn runtimeapi.Function, wait time.Duration, waitQueue int) (*Server, *membudget.Budget, string) {
	t.Helper()
	s := New(nil)
	b := membudget.New(30*MiB, waitQueue)
	s.LimitMemory(b, wait)
	set := httptrigger.Settings{Route: "/fn", Timeout: safetyTimeout, MaxBody: MiB, Concurrency: 100, Queue: 100}
	if _, err := s.Add(ReplicaSpec{ID: "fn-abcde", Workload: "fn", Settings: set, Function: fn, MemoryBytes: 10 * MiB}); err != nil {
		t.Fatal(err)
	}
	return s, b, "fn-abcde"
}

// TestRequestsHoldTheirFunctionsMemory: each request in flight holds its
// function's memory limit from the node's budget, however many the
// replica's concurrency would let run: beyond the budget a request waits
// in line and runs when a request ends.
func TestRequestsHoldTheirFunctionsMemory(t *testing.T) {
	fn := &fakeFunction{hold: make(chan struct{}), started: make(chan struct{}, 10)}
	s, b, id := memoryServer(t, fn, safetyTimeout, 10)
	ts := serve(t, s)
	results := make(chan int, 4)
	for range 4 {
		go func() {
			resp := send(t, ts, "/fn", id, strings.NewReader("x"))
			readAll(t, resp)
			results <- resp.StatusCode
		}()
	}
	for range 3 {
		<-fn.started
	}
	waitFor(t, "the fourth request to wait for memory", func() bool { return b.Usage().Waiting == 1 })
	if u := b.Usage(); u.Borrowed != 30*MiB {
		t.Fatalf("three requests running hold %d MiB, want 30", u.Borrowed>>20)
	}
	select {
	case <-fn.started:
		t.Fatal("a fourth request ran beyond the node's memory")
	default:
	}
	fn.hold <- struct{}{} // one ends: the waiting one runs
	<-fn.started
	for range 3 {
		fn.hold <- struct{}{}
	}
	for range 4 {
		if code := <-results; code != 200 {
			t.Errorf("a request ended with %d, want 200", code)
		}
	}
	if u := b.Usage(); u.Borrowed != 0 || u.Waiting != 0 {
		t.Errorf("after every request: %+v, want nothing held", u)
	}
}

// TestRequestsBeyondTheMemoryBudgetAre503: a request that finds no memory
// within its wait, or finds the line full, is answered 503 with
// Retry-After (as a saturated replica: busy, not failing) and a reason
// for the gateway's log, and never runs.
func TestRequestsBeyondTheMemoryBudgetAre503(t *testing.T) {
	for _, tc := range []struct {
		name      string
		wait      time.Duration
		waitQueue int
		want      string
	}{
		{"after its wait", time.Millisecond, 10, "waited 1ms"},
		{"when the line is full", safetyTimeout, 0, "no more requests may wait for memory (0 wait already)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fn := &fakeFunction{hold: make(chan struct{}), started: make(chan struct{}, 10)}
			s, b, id := memoryServer(t, fn, tc.wait, tc.waitQueue)
			ts := serve(t, s)
			done := make(chan int, 3)
			for range 3 {
				go func() {
					resp := send(t, ts, "/fn", id, nil)
					readAll(t, resp)
					done <- resp.StatusCode
				}()
			}
			for range 3 {
				<-fn.started
			}
			resp := send(t, ts, "/fn", id, nil)
			body := readAll(t, resp)
			if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || resp.Header.Get(httptrigger.HeaderUnavailable) != httptrigger.UnavailableSaturated {
				t.Errorf("a request beyond the budget: %d %v, want 503 saturated with Retry-After", resp.StatusCode, resp.Header)
			}
			// The reason is for the gateway's log, not the body.
			outcome, detail := httptrigger.ParseFailure(resp.Header.Get(httptrigger.HeaderFailure))
			if outcome != outcomeSaturated || !strings.Contains(detail, "the node's memory is in use: a request needs 10 MiB (the function's memory limit), 0 B of the node's 30 MiB are free") || !strings.Contains(detail, tc.want) {
				t.Errorf("503 failure %q %q, want %s, why, and %q", outcome, detail, outcomeSaturated, tc.want)
			}
			if strings.Contains(body, "memory") {
				t.Errorf("503 body %q holds the detail", body)
			}
			select {
			case <-fn.started:
				t.Error("the refused request ran")
			default:
			}
			close(fn.hold)
			for range 3 {
				<-done
			}
			if u := b.Usage(); u.Borrowed != 0 || u.Waiting != 0 {
				t.Errorf("after every request: %+v, want nothing held", u)
			}
		})
	}
}

// TestContainerRequestsHoldNoMemory: a replica without MemoryBytes (a
// container's, whose memory its container reserves) is not held back by
// the budget.
func TestContainerRequestsHoldNoMemory(t *testing.T) {
	fn := &fakeFunction{}
	s := New(nil)
	b := membudget.New(0, 0)
	s.LimitMemory(b, time.Millisecond)
	set := httptrigger.Settings{Route: "/fn", Timeout: safetyTimeout, MaxBody: MiB, Concurrency: 1, Queue: 1}
	if _, err := s.Add(ReplicaSpec{ID: "ctr-1", Workload: "ctr", Settings: set, Function: fn}); err != nil {
		t.Fatal(err)
	}
	resp := send(t, serve(t, s), "/fn", "ctr-1", nil)
	if readAll(t, resp); resp.StatusCode != 200 {
		t.Fatalf("a container function's request with no memory free: %d, want 200", resp.StatusCode)
	}
}

func serve(t *testing.T, s *Server) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts
}
