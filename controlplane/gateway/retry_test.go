package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/httptrigger"
)

// TestCutOffRequestsAreRetriedOnlyWhenIdempotent: a replica whose worker
// stops it under a request (it answers 503 "stopped") or that goes away
// before answering (its node lost: the connection drops) has the request
// sent to another replica if it is idempotent; any other request is
// answered 503 or 502, never a 200 with no body.
func TestCutOffRequestsAreRetriedOnlyWhenIdempotent(t *testing.T) {
	var cutHits, goodHits atomic.Int32
	drop := atomic.Bool{} // the cut replica drops the connection instead of answering
	// The function servers of two workers: one whose replica is stopped
	// under every request, one that answers.
	cut := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cutHits.Add(1)
		if drop.Load() {
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		w.Header().Set(httptrigger.HeaderUnavailable, httptrigger.UnavailableStopped)
		http.Error(w, "503 service unavailable: replica greet-a stopped before the function answered", http.StatusServiceUnavailable)
	}))
	defer cut.Close()
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		goodHits.Add(1)
		_, _ = io.WriteString(w, "from greet-b")
	}))
	defer good.Close()

	call := twoReplicas(t, strings.TrimPrefix(cut.URL, "http://"), strings.TrimPrefix(good.URL, "http://"))

	for _, tt := range []struct {
		name     string
		drop     bool
		method   string
		wantCode int
		wantBody string
	}{
		{"stopped under a GET: retried", false, http.MethodGet, 200, "from greet-b"},
		{"stopped under a PUT: retried", false, http.MethodPut, 200, "from greet-b"},
		{"stopped under a POST: 503", false, http.MethodPost, 503, "503 service unavailable: replica greet-a stopped before the function answered"},
		{"gone under a GET: retried", true, http.MethodGet, 200, "from greet-b"},
		{"gone under a POST: 502", true, http.MethodPost, 502, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			drop.Store(tt.drop)
			cutBefore, goodBefore := cutHits.Load(), goodHits.Load()
			code, body := call(tt.method)
			if code != tt.wantCode || tt.wantBody != "" && body != tt.wantBody || tt.wantBody == "" && !strings.HasPrefix(body, "502 bad gateway") {
				t.Errorf("%s: %d %q, want %d %q", tt.method, code, body, tt.wantCode, tt.wantBody)
			}
			if cutHits.Load() == cutBefore {
				t.Errorf("greet-a was not tried first: the test shows nothing")
			}
			if retried := goodHits.Load() > goodBefore; retried != (tt.wantCode == 200) {
				t.Errorf("sent on to greet-b: %v, want %v", retried, tt.wantCode == 200)
			}
		})
	}
}

// TestUnreachableWorkerIsSkippedForAnyMethod: a replica whose worker
// cannot be reached (its node gone, nothing listening) has every request
// sent to another replica, a POST too: nothing of it was sent.
func TestUnreachableWorkerIsSkippedForAnyMethod(t *testing.T) {
	var goodHits atomic.Int32
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		goodHits.Add(1)
		_, _ = io.WriteString(w, "from greet-b")
	}))
	defer good.Close()
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close() // its address now refuses connections
	call := twoReplicas(t, strings.TrimPrefix(gone.URL, "http://"), strings.TrimPrefix(good.URL, "http://"))
	for _, method := range []string{http.MethodPost, http.MethodGet} {
		before := goodHits.Load()
		if code, body := call(method); code != 200 || body != "from greet-b" || goodHits.Load() != before+1 {
			t.Errorf("%s with greet-a unreachable: %d %q, want 200 from greet-b", method, code, body)
		}
	}
}

// twoReplicas starts a gateway routing /greet to replica greet-a, on a
// worker at addrA, and greet-b, at addrB, which looks busy so that greet-a
// is always tried first; it returns a function that sends a request with
// a small body and returns the answer's status and body.
func twoReplicas(t *testing.T, addrA, addrB string) func(method string) (int, string) {
	url := gatewayOf(t, addrA, addrB)
	return func(method string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, url+"/greet", strings.NewReader("a body"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
}

// gatewayOf serves, through a gateway, function greet at /greet with
// replica greet-a on a worker at addrA and greet-b on one at addrB (which
// looks busier: tried second); it returns the gateway's URL.
func gatewayOf(t *testing.T, addrA, addrB string) string {
	k := newCluster(t)
	k.node("n1", addrA)
	k.node("n2", addrB)
	wl := function("greet", "/greet", "")
	k.put(store.WorkloadsPrefix+"greet", wl)
	k.replica(wl, "greet-a", "n1")
	k.replica(wl, "greet-b", "n2")
	k.flush()
	g := New(Config{Store: k.st, Cache: k.c, Member: "m1"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	<-g.Ready()
	eventually(t, "both replicas routed", func() bool {
		r := g.table.Load().match("gw", "/greet")
		return r != nil && len(r.replicas) == 2
	})
	for _, rep := range g.table.Load().match("gw", "/greet").replicas {
		if rep.instance == "greet-b" {
			rep.inFlight.Add(100)
		}
	}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestAnswersPassAsTheWorkerSendsThem: an answer of unknown length (a
// function that streams) reaches the client part by part as the worker
// flushes it; one of known length arrives whole.
func TestAnswersPassAsTheWorkerSendsThem(t *testing.T) {
	release := make(chan struct{})
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("known") != "" {
			w.Header().Set("Content-Length", "5")
			_, _ = io.WriteString(w, "whole")
			return
		}
		_, _ = io.WriteString(w, "first ")
		w.(http.Flusher).Flush()
		<-release
		_, _ = io.WriteString(w, "second")
	}))
	defer worker.Close()
	addr := strings.TrimPrefix(worker.URL, "http://")
	url := gatewayOf(t, addr, addr) + "/greet"
	resp, err := http.Get(url + "?known=1")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(b) != "whole" || resp.ContentLength != 5 {
		t.Fatalf("an answer of known length: %d %q (length %d)", resp.StatusCode, b, resp.ContentLength)
	}
	_ = resp.Body.Close()
	resp, err = http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, len("first "))
	read := make(chan error, 1)
	go func() {
		_, err := io.ReadFull(resp.Body, first)
		read <- err
	}()
	select {
	case err := <-read:
		if err != nil || string(first) != "first " {
			t.Fatalf("before the function ends: %q, %v; want what it flushed", first, err)
		}
	case <-time.After(30 * time.Second): // a safety net, not a speed check
		close(release)
		t.Fatal("what the function flushed did not reach the client before it ended")
	}
	close(release)
	if rest, err := io.ReadAll(resp.Body); err != nil || string(rest) != "second" {
		t.Fatalf("the rest: %q, %v", rest, err)
	}
}
