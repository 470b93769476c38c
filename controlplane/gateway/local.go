package gateway

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// Two shortcuts around the control loop and the second HTTP hop:
//
//   - a worker in this process (`wasmorch up`) is called directly: its
//     function server is an http.Handler, so a request costs one HTTP
//     exchange, not two;
//   - a request for a function scaled to zero is sent at once to a worker
//     that can run it without a replica (cold start): every request gets a
//     fresh sandbox anyway, and the worker prepares the function from its
//     module and compile caches. The replica count is raised beside it, in
//     the background, so that the autoscaler's bookkeeping and the next
//     requests follow the usual path.

// wakeTimeout bounds a background wake-up; after it, the next request at
// zero may try again.
const wakeTimeout = 10 * time.Second

// setColdHeaders names the function itself (not a replica) to the worker.
func setColdHeaders(h http.Header, rt *route) {
	h.Del(httptrigger.HeaderInstance)
	h.Set(httptrigger.HeaderWorkload, rt.workloadHeader)
	h.Set(httptrigger.HeaderSpec, rt.specHeader)
	h.Set(httptrigger.HeaderRoute, rt.settings.Route)
}

// serveLocalReplica is serveLocal for a replica, counted in flight, and
// its answer counted for its generation.
func (g *Gateway) serveLocalReplica(w http.ResponseWriter, req *http.Request, rt *route, rep *replica) bool {
	rep.inFlight.Add(1)
	defer rep.inFlight.Add(-1) // also when the response is aborted (a panic)
	aw, served := g.serveLocal(w, req, rt, rep.target, rep.instance)
	if served && aw.wrote {
		g.loadOf(rt.workload).answered(rep.generation, aw.failed(), time.Now())
		if obs, ok := req.Context().Value(observedKey{}).(*observed); ok {
			obs.answeredBy(rep.generation)
		}
	}
	return served
}

// serveLocal offers the request to a function server in this process:
// to a replica when instance is set, else as a cold start, and returns how
// the worker answered. It reports false, having written nothing, when the
// worker does not serve it (the caller then goes the usual way).
func (g *Gateway) serveLocal(w http.ResponseWriter, req *http.Request, rt *route, t target, instance string) (*attemptWriter, bool) {
	for name := range req.Header {
		if strings.HasPrefix(name, "X-Wasmorch-") {
			req.Header.Del(name)
		}
	}
	req.Header.Set(httptrigger.HeaderRemoteAddr, req.RemoteAddr)
	setForwarded(req)
	if instance != "" {
		req.Header.Set(httptrigger.HeaderInstance, instance)
		req.Header.Set(httptrigger.HeaderRoute, rt.settings.Route)
	} else {
		setColdHeaders(req.Header, rt)
	}
	body := &touchedBody{ReadCloser: req.Body}
	if req.Body != nil && req.Body != http.NoBody {
		req.Body = body
	}
	aw := &attemptWriter{w: w, h: http.Header{}, g: g, req: req, idempotent: idempotent(req.Method)}
	aw.c, _ = req.Context().Value(callKey{}).(*call)
	t.local.ServeHTTP(aw, req)
	if aw.retry && !body.touched {
		req.Body = body.ReadCloser
		return aw, false
	}
	if aw.retry && req.GetBody != nil {
		// A small body read in full before (bufferSmallBody): offered
		// again from the start.
		if b, err := req.GetBody(); err == nil {
			req.Body = b
			return aw, false
		}
	}
	switch {
	case aw.retry:
		// The body is gone: nothing to offer another replica.
		g.failed(req, aw.c, http.StatusServiceUnavailable, outcomeNoReplica, "the replica stopped after it read the request body")
		refuse(w, req.Header.Get(HeaderRequestID), http.StatusServiceUnavailable)
	case !aw.wrote && aw.c != nil && aw.c.body.broken():
		// Nobody answered a client that stopped sending (net/http ended
		// its context): it may still read.
		g.failed(req, aw.c, http.StatusBadRequest, runtimeapi.OutcomeBadBody, "the request body was cut short")
		refuse(w, aw.c.id, http.StatusBadRequest)
	}
	return aw, true
}

// setForwarded sets the X-Forwarded-* headers as the HTTP proxy does
// (httputil.ProxyRequest.SetXForwarded), so that a function sees the same
// request whichever way the gateway reaches its worker.
func setForwarded(req *http.Request) {
	if ip, _, err := net.SplitHostPort(req.RemoteAddr); err == nil {
		if prior := req.Header["X-Forwarded-For"]; len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		req.Header.Set("X-Forwarded-For", ip)
	} else {
		req.Header.Del("X-Forwarded-For")
	}
	req.Header.Set("X-Forwarded-Host", req.Host)
	if req.TLS == nil {
		req.Header.Set("X-Forwarded-Proto", "http")
	} else {
		req.Header.Set("X-Forwarded-Proto", "https")
	}
}

// attemptWriter passes a local function server's response through, unless
// it is the "no such replica" 503 (or, for an idempotent request, the 503
// of a replica stopped under it), which it swallows for the caller to try
// elsewhere. A failure answer (no function answered) goes out in its
// public form, as Gateway.answered gives it over HTTP.
type attemptWriter struct {
	w          http.ResponseWriter
	h          http.Header
	g          *Gateway
	req        *http.Request
	c          *call
	idempotent bool // the request may run again
	wrote      bool
	retry      bool
	public     bool // a failure answer was sent: the worker's body is dropped
	code       int  // the status passed through
	saturated  bool // a 503 because the replica was full
}

// failed says whether the function failed the request (failedAnswer).
func (a *attemptWriter) failed() bool { return failedAnswer(a.code, a.saturated) }

func (a *attemptWriter) Header() http.Header { return a.h }

func (a *attemptWriter) WriteHeader(code int) {
	if a.wrote || a.retry {
		return
	}
	if why := a.h.Get(httptrigger.HeaderUnavailable); code == http.StatusServiceUnavailable &&
		(why == httptrigger.UnavailableNoReplica || why == httptrigger.UnavailableStopped && a.idempotent) {
		a.retry = true
		return
	}
	a.wrote, a.code = true, code
	a.saturated = a.h.Get(httptrigger.HeaderUnavailable) == httptrigger.UnavailableSaturated
	dst := a.w.Header()
	if a.h.Get(httptrigger.HeaderFailure) != "" && a.c != nil {
		resp := &http.Response{StatusCode: code, Header: a.h, Request: a.req, Body: http.NoBody}
		a.g.failureAnswer(resp, a.c)
		a.public = true
		for k, v := range resp.Header {
			dst[k] = v
		}
		a.w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(a.w, resp.Body)
		return
	}
	dropProtocolHeaders(a.h)
	for k, v := range a.h {
		dst[k] = v
	}
	a.w.WriteHeader(code)
}

func (a *attemptWriter) Write(p []byte) (int, error) {
	if !a.wrote {
		a.WriteHeader(http.StatusOK)
	}
	if a.retry || a.public {
		return len(p), nil
	}
	return a.w.Write(p)
}

// Flush implements http.Flusher, which functions stream through.
func (a *attemptWriter) Flush() {
	if !a.wrote {
		a.WriteHeader(http.StatusOK)
	}
	if f, ok := a.w.(http.Flusher); ok && !a.retry && !a.public {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the server's writer.
func (a *attemptWriter) Unwrap() http.ResponseWriter { return a.w }

// touchedBody remembers whether the request body was read.
type touchedBody struct {
	io.ReadCloser
	touched bool
}

func (b *touchedBody) Read(p []byte) (int, error) {
	b.touched = true
	return b.ReadCloser.Read(p)
}

// wakeInBackground raises the replica count of a function at zero, once
// per wake-up (until the route table shows a replica), without holding the
// request that asked for it.
func (g *Gateway) wakeInBackground(rt *route) {
	now, last := time.Now().UnixNano(), rt.waking.Load()
	if last != 0 && now-last < int64(wakeTimeout) || !rt.waking.CompareAndSwap(last, now) {
		return
	}
	base := context.Background()
	if p := g.runCtx.Load(); p != nil {
		base = *p
	}
	g.bg.Add(1)
	go func() {
		defer g.bg.Done()
		ctx, cancel := context.WithTimeout(base, wakeTimeout)
		defer cancel()
		if err := g.wake(ctx, rt.workload); err != nil {
			g.log.Warn("gateway: scaling a function from zero failed", "workload", rt.workload, "err", err)
			rt.waking.Store(0)
		}
	}()
}

// bufferPool lends the proxy its copy buffers.
type bufferPool struct{}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }
