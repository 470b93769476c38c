package funcserver

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

func coldRequest(t *testing.T, url string, spec *pb.WorkloadSpec, body string) *http.Request {
	t.Helper()
	b, err := proto.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest("POST", url+"/fn/x", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(httptrigger.HeaderWorkload, "fn/1")
	req.Header.Set(httptrigger.HeaderSpec, base64.RawURLEncoding.EncodeToString(b))
	req.Header.Set(httptrigger.HeaderRoute, "/fn")
	return req
}

// TestColdStartServesWithoutAReplicaWithinTheFunctionsLimits: a request
// naming a function (not a replica) is served by a cold replica prepared
// once from the spec, with the spec's concurrency, queue and body limits.
func TestColdStartServesWithoutAReplicaWithinTheFunctionsLimits(t *testing.T) {
	fn := &fakeFunction{hold: make(chan struct{}), started: make(chan struct{}, 10)}
	s := New(nil)
	var prepared atomic.Int32
	var gotSpec *pb.WorkloadSpec
	s.EnableCold(ColdConfig{Prepare: func(ctx context.Context, workload string, spec *pb.WorkloadSpec) (runtimeapi.Function, error) {
		prepared.Add(1)
		gotSpec = spec
		return fn, nil
	}, Logs: func(string) io.Writer { return io.Discard }})
	srv := httptest.NewServer(s)
	defer srv.Close()
	defer s.Close(time.Second)
	spec := &pb.WorkloadSpec{ModuleDigest: "sha256:ab", MemoryBytes: 1 << 20,
		Http: &pb.HttpTrigger{Route: "/fn", Concurrency: 1, Queue: 1, MaxBodyBytes: 8, TimeoutMs: safetyTimeout.Milliseconds()}}

	// One runs, one waits in the queue, the third is refused.
	type answer struct {
		status int
		body   string
		why    string
	}
	answers := make(chan answer, 3)
	send := func(body string) {
		resp, err := http.DefaultClient.Do(coldRequest(t, srv.URL, spec, body))
		if err != nil {
			answers <- answer{body: err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		answers <- answer{resp.StatusCode, string(b), resp.Header.Get(httptrigger.HeaderUnavailable)}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); send("one") }()
	select {
	case <-fn.started:
	case <-time.After(safetyTimeout):
		t.Fatal("the cold request never reached the function")
	}
	wg.Add(1)
	go func() { defer wg.Done(); send("two") }()
	waitFor(t, "the second request queued", func() bool { return s.InFlight() == 2 })
	send("three")
	if a := <-answers; a.status != 503 || a.why != httptrigger.UnavailableSaturated {
		t.Errorf("third request: %+v, want 503 saturated", a)
	}
	fn.hold <- struct{}{}
	fn.hold <- struct{}{}
	wg.Wait()
	close(answers)
	for a := range answers {
		if a.status != 200 || !strings.HasPrefix(a.body, "/fn|/x|") {
			t.Errorf("answer %+v, want 200 from the function", a)
		}
	}
	// Over the body limit: refused before the function runs.
	close(fn.hold)
	resp, err := http.DefaultClient.Do(coldRequest(t, srv.URL, spec, "0123456789"))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Errorf("a body over the limit: %s, want 413", resp.Status)
	}
	if n := prepared.Load(); n != 1 {
		t.Errorf("prepared %d times, want once", n)
	}
	if gotSpec.GetMemoryBytes() != 1<<20 || gotSpec.GetModuleDigest() != "sha256:ab" {
		t.Errorf("prepared from %v, want the request's spec", gotSpec)
	}
	if s.ColdReplicas() != 1 {
		t.Errorf("%d cold replicas, want 1", s.ColdReplicas())
	}
	s.Close(time.Second)
	if fn.closed.Load() != 1 || s.ColdReplicas() != 0 {
		t.Errorf("after Close: function closed %d times, %d cold replicas; want 1, 0", fn.closed.Load(), s.ColdReplicas())
	}
}

// TestColdStartUnavailableWithoutPreparer: a server that cannot prepare
// functions (or fails to) answers "no replica", which sends the gateway
// back to waiting for one.
func TestColdStartUnavailableWithoutPreparer(t *testing.T) {
	s := New(nil)
	srv := httptest.NewServer(s)
	defer srv.Close()
	spec := &pb.WorkloadSpec{Http: &pb.HttpTrigger{Route: "/fn"}}
	check := func(what string) {
		t.Helper()
		resp, err := http.DefaultClient.Do(coldRequest(t, srv.URL, spec, ""))
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get(httptrigger.HeaderUnavailable) != httptrigger.UnavailableNoReplica {
			t.Errorf("%s: %s %q, want 503 no-replica", what, resp.Status, resp.Header.Get(httptrigger.HeaderUnavailable))
		}
	}
	check("no preparer")
	var calls atomic.Int32
	s.EnableCold(ColdConfig{Prepare: func(context.Context, string, *pb.WorkloadSpec) (runtimeapi.Function, error) {
		calls.Add(1)
		return nil, io.ErrUnexpectedEOF
	}, Logs: func(string) io.Writer { return io.Discard }})
	check("preparing fails")
	check("preparing fails again")
	if calls.Load() != 2 {
		t.Errorf("prepared %d times; a failure must not be kept", calls.Load())
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(safetyTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: gave up", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestStoppedReplicaKeepsItsFunctionForColdStarts: a replica that stops
// hands its prepared function to the cold replica of its generation, so
// that a cold start after a scale to zero prepares nothing.
func TestStoppedReplicaKeepsItsFunctionForColdStarts(t *testing.T) {
	fn := &fakeFunction{}
	s := New(nil)
	var prepared atomic.Int32
	s.EnableCold(ColdConfig{Prepare: func(context.Context, string, *pb.WorkloadSpec) (runtimeapi.Function, error) {
		prepared.Add(1)
		return &fakeFunction{}, nil
	}, Logs: func(string) io.Writer { return io.Discard }})
	srv := httptest.NewServer(s)
	defer srv.Close()
	set := httptrigger.Effective(&pb.HttpTrigger{Route: "/fn"})
	rep, err := s.Add(ReplicaSpec{ID: "fn-abc", Workload: "fn", Settings: set, Function: fn, ColdKey: "fn/1"})
	if err != nil {
		t.Fatal(err)
	}
	rep.Stop(context.Background(), time.Second)
	if fn.closed.Load() != 0 || s.ColdReplicas() != 1 {
		t.Fatalf("after the replica stopped: function closed %d times, %d cold replicas; want it kept", fn.closed.Load(), s.ColdReplicas())
	}
	resp, err := http.DefaultClient.Do(coldRequest(t, srv.URL, &pb.WorkloadSpec{Http: &pb.HttpTrigger{Route: "/fn"}}, "hi"))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	fn.mu.Lock()
	served := len(fn.seen)
	fn.mu.Unlock()
	if resp.StatusCode != 200 || served != 1 || prepared.Load() != 0 {
		t.Fatalf("cold request: %s, served by the kept function %d times, prepared %d times; want 200, 1, 0", resp.Status, served, prepared.Load())
	}
	s.Close(time.Second)
	if fn.closed.Load() != 1 {
		t.Errorf("function closed %d times after Close, want 1", fn.closed.Load())
	}
}
