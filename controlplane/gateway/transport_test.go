package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// workerStub is a function server stand-in that counts the connections
// it accepted.
type workerStub struct {
	*httptest.Server
	conns atomic.Int32
	mu    sync.Mutex
	live  []net.Conn
}

func newWorkerStub(t *testing.T, h http.HandlerFunc) *workerStub {
	t.Helper()
	w := &workerStub{}
	w.Server = httptest.NewUnstartedServer(h)
	w.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateNew {
			w.conns.Add(1)
			w.mu.Lock()
			w.live = append(w.live, c)
			w.mu.Unlock()
		}
	}
	w.Start()
	t.Cleanup(w.Close)
	return w
}

// closeConns closes every connection the stub accepted, as a worker that
// stops does.
func (w *workerStub) closeConns() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, c := range w.live {
		_ = c.Close()
	}
	w.live = nil
}

type countingTransport struct {
	n    atomic.Int32
	base http.RoundTripper
}

func (c *countingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.base.RoundTrip(req)
}

func send(t *testing.T, rt http.RoundTripper, ctx context.Context, method, url string, body []byte) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	return rt.RoundTrip(req)
}

func readBody(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return string(b)
}

// Requests one after another share one kept connection; an answer closed
// before its end costs its connection (the rest of it is still on it).
func TestWorkerConnectionsAreKeptWhenAnswersAreReadWhole(t *testing.T) {
	w := newWorkerStub(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = io.WriteString(w, r.Method+" "+string(body)+strings.Repeat(".", 100<<10))
	})
	rt := newWorkerTransport(nil, http.DefaultTransport)
	for i := range 5 {
		method, body := http.MethodGet, []byte(nil)
		if i%2 == 1 {
			method, body = http.MethodPost, []byte("hello")
		}
		resp, err := send(t, rt, context.Background(), method, w.URL, body)
		if err != nil {
			t.Fatal(err)
		}
		if got := readBody(t, resp); !strings.HasPrefix(got, method+" "+string(body)+".") || len(got) != len(method)+1+len(body)+100<<10 {
			t.Fatalf("answer %d: %q...", i, got[:min(len(got), 40)])
		}
	}
	if n := w.conns.Load(); n != 1 {
		t.Errorf("5 requests in turn used %d connections, want 1", n)
	}
	resp, err := send(t, rt, context.Background(), http.MethodGet, w.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.ReadFull(resp.Body, make([]byte, 10))
	_ = resp.Body.Close()
	resp, err = send(t, rt, context.Background(), http.MethodGet, w.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	readBody(t, resp)
	if n := w.conns.Load(); n != 2 {
		t.Errorf("after an answer closed half read: %d connections, want 2 (a new one)", n)
	}
}

// A kept connection the worker closed (it stopped, or restarted) is not
// used: a POST, which cannot be sent again once sent, goes on a new
// connection and is answered.
func TestAConnectionTheWorkerClosedIsNotUsed(t *testing.T) {
	w := newWorkerStub(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = w.Write(body)
	})
	rt := newWorkerTransport(nil, http.DefaultTransport)
	for i := range 3 {
		resp, err := send(t, rt, context.Background(), http.MethodPost, w.URL, []byte("once"))
		if err != nil {
			t.Fatalf("POST %d after the worker closed its connections: %v", i, err)
		}
		if got := readBody(t, resp); got != "once" {
			t.Fatalf("POST %d: %q", i, got)
		}
		w.closeConns()
	}
	if n := w.conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3 (each closed one replaced)", n)
	}
}

// A request canceled while the function runs closes its connection: the
// worker's request ends (it stops the call), and RoundTrip returns.
func TestACanceledRequestEndsOnTheWorker(t *testing.T) {
	started, ended := make(chan struct{}), make(chan struct{})
	w := newWorkerStub(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		close(ended)
	})
	rt := newWorkerTransport(nil, http.DefaultTransport)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := send(t, rt, ctx, http.MethodGet, w.URL, nil)
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("a canceled request returned an answer")
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the worker's request was not ended by the cancel")
	}
}

// A body that streams (unknown length) and an upgrade go through the
// fallback, which writes the body while it reads the answer.
func TestStreamingBodiesGoThroughTheFallback(t *testing.T) {
	w := newWorkerStub(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = w.Write(body)
	})
	fallback := &countingTransport{base: http.DefaultTransport}
	rt := newWorkerTransport(nil, fallback)
	req, _ := http.NewRequest(http.MethodPost, w.URL, io.NopCloser(strings.NewReader("streamed")))
	req.ContentLength = -1
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if got := readBody(t, resp); got != "streamed" {
		t.Errorf("%q", got)
	}
	if fallback.n.Load() != 1 {
		t.Errorf("the streaming body did not go through the fallback")
	}
	resp, err = send(t, rt, context.Background(), http.MethodPost, w.URL, []byte("buffered"))
	if err != nil {
		t.Fatal(err)
	}
	if got := readBody(t, resp); got != "buffered" || fallback.n.Load() != 1 {
		t.Errorf("buffered body: %q, fallback used %d times, want once", got, fallback.n.Load())
	}
}

// A worker that cannot be reached gives a dial error (nothing was sent:
// the gateway may offer the request elsewhere, a POST too).
func TestAnUnreachableWorkerIsADialError(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	rt := newWorkerTransport(nil, http.DefaultTransport)
	_, err = send(t, rt, context.Background(), http.MethodPost, "http://"+addr+"/", []byte("x"))
	if err == nil || !unsent(err) {
		t.Errorf("error %v, want a dial error", err)
	}
}

// An answer whose head is over the bound is an error, not read on.
func TestAnAnswerWithHugeHeadersIsRefused(t *testing.T) {
	var small atomic.Bool
	w := newWorkerStub(t, func(w http.ResponseWriter, r *http.Request) {
		if small.Load() {
			_, _ = io.WriteString(w, "small")
			return
		}
		for i := range 24 {
			w.Header().Set(fmt.Sprintf("X-Big-%d", i), strings.Repeat("a", 64<<10))
		}
		_, _ = io.WriteString(w, "body")
	})
	rt := newWorkerTransport(nil, http.DefaultTransport)
	if _, err := send(t, rt, context.Background(), http.MethodGet, w.URL, nil); !errors.Is(err, errAnswerHeadTooLarge) {
		t.Errorf("error %v, want %v", err, errAnswerHeadTooLarge)
	}
	small.Store(true)
	resp, err := send(t, rt, context.Background(), http.MethodGet, w.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readBody(t, resp); got != "small" {
		t.Errorf("%q", got)
	}
}
