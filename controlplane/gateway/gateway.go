// Package gateway is the HTTP front door of every control-plane member: it
// keeps a route table of the functions (workloads with an HTTP trigger)
// and their ready replicas, which follows the member's cache change by
// change (rebuilding only the routes a change touches), matches each
// request to a function (optional host, longest path prefix), and proxies
// it to the function server of a worker holding a ready replica, chosen by
// the power of two choices on requests in flight. It enforces each
// function's body limit (413) and timeout (504) and passes the workers'
// 503s through. Its clients may be anyone: error answers give a status
// and a request id, the detail goes to the log and events (answers.go);
// the public port's connections are held to one reading of a request's
// length (framing.go).
package gateway

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/httpstatus"
	"github.com/wasmorch/wasmorch/internal/httptrigger"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

const (
	// timeoutSlack is what the gateway allows beyond a function's timeout,
	// which the worker enforces itself (stopping the sandbox and answering
	// 504 with the reason); the gateway's own 504 is for a worker that
	// does not answer at all.
	timeoutSlack = 2 * time.Second
	// resync rebuilds every route from the cache even without changes: a
	// safety net, the cache's changes being enough.
	resync = 30 * time.Second
	// settle lets a burst of changes become one pass.
	settle = 5 * time.Millisecond
	// maxAttempts bounds how many times one request is offered to a
	// replica that its worker no longer serves (each round after the
	// first waits for the route table to change).
	maxAttempts = 10
)

// Config is what a gateway needs from its control-plane member.
type Config struct {
	// Store is where the gateway writes: load reports, and a function's
	// replica count when a request wakes it from zero.
	Store *store.Store
	// Cache is the member's view of the cluster, which the route table is
	// built from and follows (required).
	Cache *cache.Cache
	// Member names this member in load reports and events.
	Member string
	// Record, if set, records an event about an object ("workload/x").
	Record func(ctx context.Context, object, reason, message string)
	Logger *slog.Logger
	// TLS, when set, is how the gateway dials the workers' function
	// servers (security: mutual TLS with the member's certificate).
	TLS *tls.Config
	// Registry, if set, receives the gateway's metrics (metrics.go).
	Registry prometheus.Registerer
}

// Gateway is an http.Handler; Start keeps its route table current.
type Gateway struct {
	st     *store.Store
	cache  *cache.Cache
	build  *builder
	member string
	record func(ctx context.Context, object, reason, message string)
	log    *slog.Logger
	table  atomic.Pointer[table]
	proxy  *httputil.ReverseProxy
	ready  chan struct{} // closed after the first table is built
	scheme string        // of the workers' function servers: https with Config.TLS

	swapMu sync.Mutex
	swap   chan struct{} // closed and replaced at each table swap

	loads sync.Map // workload: *load; never deleted

	localMu sync.Mutex
	local   map[string]*localServer // function servers in this process, by node

	runCtx atomic.Pointer[context.Context] // Start's, for background wake-ups
	bg     sync.WaitGroup                  // wake-ups and events in flight

	failures failureEvents // FunctionFailed events, rate-limited
	metrics  *metrics      // nil without Config.Registry
}

// New returns a gateway over the cache and the store; Start makes it
// route.
func New(cfg Config) *Gateway {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{
		st: cfg.Store, cache: cfg.Cache, build: newBuilder(), member: cfg.Member, record: cfg.Record, log: log,
		ready: make(chan struct{}), swap: make(chan struct{}),
		local: map[string]*localServer{}, metrics: newMetrics(cfg.Registry),
	}
	g.table.Store(&table{})
	tlsCfg := workerTLS(cfg.TLS)
	// For what workerTransport does not send itself (transport.go).
	transport := &http.Transport{
		Proxy:               nil, // workers are reached directly
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024, // few workers, many requests each: keep every connection
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true, // pass the function's bytes through as they are
		WriteBufferSize:     16 << 10,
		ReadBufferSize:      16 << 10,
		TLSClientConfig:     tlsCfg,
	}
	g.scheme = "http"
	if cfg.TLS != nil {
		g.scheme = "https"
	}
	g.proxy = &httputil.ReverseProxy{
		Rewrite:   rewrite,
		Transport: &upstream{g: g, base: newWorkerTransport(tlsCfg, transport)},
		// An answer of unknown length (a function that streams) is
		// flushed at each write (ReverseProxy does so whatever this
		// says); one of known length goes out through the server's
		// buffer. -1 here would also flush those, from a timer armed for
		// every request: a timer goroutine and a wake-up of the thread
		// waiting on the network, for every request.
		FlushInterval:  0,
		ModifyResponse: g.answered,
		ErrorHandler:   g.proxyError,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		BufferPool:     bufferPool{},
	}
	return g
}

// Start keeps the route table current until ctx is done: it follows the
// cache's changes, rebuilding the routes they touch a moment after each
// burst, and rebuilds every route every resync.
func (g *Gateway) Start(ctx context.Context) error {
	if g.cache == nil {
		return errors.New("gateway: no cache to build the route table from")
	}
	g.runCtx.Store(&ctx)
	defer g.bg.Wait()
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		g.reportLoads(ctx)
	}()
	defer func() { <-reported }()
	// Subscribed before the first read, so that no change falls between.
	unsubscribe := g.cache.Subscribe(g.build.note)
	defer unsubscribe()
	select {
	case <-g.cache.Synced():
	case <-ctx.Done():
		return nil
	}
	g.build.markAll()
	ticker := time.NewTicker(resync)
	defer ticker.Stop()
	for {
		g.pass()
		select {
		case <-ctx.Done():
			return nil
		case <-g.build.kick:
			select {
			case <-time.After(settle):
			case <-ctx.Done():
				return nil
			}
		case <-ticker.C:
			g.build.markAll()
		}
	}
}

// pass rebuilds what changed since the previous pass and publishes the
// table if a route changed.
func (g *Gateway) pass() {
	w := g.build.take()
	g.localMu.Lock()
	local := maps.Clone(g.local)
	g.localMu.Unlock()
	prev := g.table.Load()
	if t := g.build.update(g.read, prev, w, local); t != prev {
		g.publish(t)
	}
	select {
	case <-g.ready:
	default:
		close(g.ready)
	}
}

// read runs fn over the cache, held still.
func (g *Gateway) read(fn func(source)) {
	g.cache.Read(func(r cache.Reader) { fn(r) })
}

// Ready is closed once the gateway has read its first route table.
func (g *Gateway) Ready() <-chan struct{} { return g.ready }

// ServeLocally makes the gateway call h, the function server of a worker
// running in this process as node, directly rather than over HTTP (as
// `wasmorch up` runs them). It takes effect at the next pass.
func (g *Gateway) ServeLocally(node string, h http.Handler) {
	g.localMu.Lock()
	g.local[node] = &localServer{h}
	g.localMu.Unlock()
	g.build.markNode(node)
}

// call is what RoundTrip needs to know about a matched request.
type call struct {
	route *route
	id    string      // the request id
	body  *clientBody // the client's body, nil for none
	cold  *target     // set: try a cold start there first
	// first is the replica ServeHTTP picked, tried first: one draw per
	// request keeps a canary's share of the traffic exact.
	first *replica
	// obs measures the request (metrics.go); nil without metrics.
	obs *observed
	// load is the function's load record (scale.go).
	load *load
}

type callKey struct{}

// observedKey carries a request's *observed (metrics.go).
type observedKey struct{}

// ServeHTTP routes one request.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	// The id is the gateway's: a client's is replaced, on the request the
	// function sees as on the answer.
	id := newRequestID()
	req.Header.Set(HeaderRequestID, id)
	w.Header().Set(HeaderRequestID, id)
	rt := g.table.Load().match(req.Host, req.URL.Path)
	if rt == nil {
		refuse(w, id, http.StatusNotFound)
		return
	}
	set := rt.settings
	c := &call{route: rt, id: id}
	if obs := g.metrics.begin(rt.workload, set.Route); obs != nil {
		sw := httpstatus.New(w)
		w = sw
		defer func() { obs.done(sw.Status()) }()
		req = req.WithContext(context.WithValue(req.Context(), observedKey{}, obs))
		c.obs = obs
	}
	if len(rt.replicas) == 0 && rt.autoscale == nil {
		g.failed(req, c, http.StatusServiceUnavailable, outcomeNoReplica, "no ready replica")
		refuse(w, id, http.StatusServiceUnavailable)
		return
	}
	if req.ContentLength > set.MaxBody {
		g.failed(req, c, http.StatusRequestEntityTooLarge, runtimeapi.OutcomeTooLarge,
			fmt.Sprintf("the body of %d bytes is over the function's limit of %d bytes", req.ContentLength, set.MaxBody))
		refuse(w, id, http.StatusRequestEntityTooLarge)
		return
	}
	if req.Body != nil && req.Body != http.NoBody {
		c.body = &clientBody{ReadCloser: http.MaxBytesReader(w, req.Body, set.MaxBody)}
		req.Body = c.body
		if err := bufferSmallBody(req); err != nil {
			g.failed(req, c, http.StatusBadRequest, runtimeapi.OutcomeBadBody, "reading the request body: "+err.Error())
			refuse(w, id, http.StatusBadRequest)
			return
		}
	}
	ctx, cancel := context.WithTimeoutCause(req.Context(), set.Timeout+timeoutSlack, errTimeout)
	defer cancel()
	ctx = context.WithValue(ctx, callKey{}, c)
	req = req.WithContext(ctx)
	l := g.loadOf(rt.workload)
	c.load = l
	l.begin(time.Now())
	defer l.end()
	if len(rt.replicas) == 0 && len(rt.coldTargets) > 0 {
		// Scaled to zero: serve the request on a worker at once (a fresh
		// sandbox needs no replica) while the replica count is raised.
		g.wakeInBackground(rt)
		c.obs.coldStart()
		c.cold = rt.coldTargets[0]
		if c.cold.local != nil {
			c.cold = nil
			if _, served := g.serveLocal(w, req, rt, *rt.coldTargets[0], ""); served {
				return
			}
		}
	} else if rep := rt.pick(nil); rep != nil && rep.local != nil {
		if g.serveLocalReplica(w, req, rt, rep) {
			return
		}
	} else {
		c.first = rep
	}
	g.proxy.ServeHTTP(w, req)
}

var (
	errTimeout   = errors.New("the function did not answer within its timeout")
	errNoReplica = errors.New("no ready replica")
)

// outcomeNoReplica is a request that found no replica to serve it.
const outcomeNoReplica = "NoReplica"

// answered passes a worker's answer on: a failure answer (no function
// answered) in its public form, the function's own without the gateway
// protocol's headers.
func (g *Gateway) answered(resp *http.Response) error {
	if c, _ := resp.Request.Context().Value(callKey{}).(*call); c != nil && resp.Header.Get(httptrigger.HeaderFailure) != "" {
		g.failureAnswer(resp, c)
		return nil
	}
	dropProtocolHeaders(resp.Header)
	return nil
}

// proxyError answers for a request the proxy could not complete.
func (g *Gateway) proxyError(w http.ResponseWriter, req *http.Request, err error) {
	c, _ := req.Context().Value(callKey{}).(*call)
	id := req.Header.Get(HeaderRequestID)
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		g.failed(req, c, http.StatusRequestEntityTooLarge, runtimeapi.OutcomeTooLarge, err.Error())
		refuse(w, id, http.StatusRequestEntityTooLarge)
	case c != nil && c.body.broken():
		g.failed(req, c, http.StatusBadRequest, runtimeapi.OutcomeBadBody, "reading the request body: "+err.Error())
		refuse(w, id, http.StatusBadRequest)
	case c != nil && errors.Is(context.Cause(req.Context()), errTimeout):
		g.failed(req, c, http.StatusGatewayTimeout, outcomeNoAnswer,
			fmt.Sprintf("no answer from the worker within the function's timeout of %s and %s more", c.route.settings.Timeout, timeoutSlack))
		refuse(w, id, http.StatusGatewayTimeout)
	case errors.Is(err, errNoReplica):
		g.failed(req, c, http.StatusServiceUnavailable, outcomeNoReplica, err.Error())
		refuse(w, id, http.StatusServiceUnavailable)
	case req.Context().Err() != nil:
		// The client went away: nobody to answer.
	default:
		g.failed(req, c, http.StatusBadGateway, outcomeUnreachable, err.Error())
		refuse(w, id, http.StatusBadGateway)
	}
}

// rewrite prepares the outgoing request; the replica is chosen per attempt
// in upstream.RoundTrip. A client cannot name a replica or claim an
// address: the gateway's own headers are set only here.
func rewrite(pr *httputil.ProxyRequest) {
	for name := range pr.Out.Header {
		if strings.HasPrefix(name, "X-Wasmorch-") {
			pr.Out.Header.Del(name)
		}
	}
	pr.SetXForwarded()
	pr.Out.Host = pr.In.Host
	pr.Out.Header.Set(httptrigger.HeaderRemoteAddr, pr.In.RemoteAddr)
}

// upstream sends a request to a replica, and to another one, when the
// request has no body it cannot replay, if the first's worker cannot be
// reached (nothing was sent), answers that it no longer serves the replica
// (one that stopped between two table rebuilds: the request never ran),
// or, for an idempotent request, answers that the replica stopped under
// it or goes away before answering. Any other request cut off so is
// answered 503 or 502, never as if the function had answered.
type upstream struct {
	g    *Gateway
	base http.RoundTripper
}

func (u *upstream) RoundTrip(out *http.Request) (*http.Response, error) {
	c, _ := out.Context().Value(callKey{}).(*call)
	if c == nil {
		return nil, errors.New("gateway: request without a route")
	}
	replayable := out.Body == nil || out.Body == http.NoBody || out.GetBody != nil
	// rewind gives every try after the first a fresh copy of the body.
	sent := false
	rewind := func(try *http.Request) error {
		if sent && out.GetBody != nil {
			b, err := out.GetBody()
			if err != nil {
				return err
			}
			try.Body = b
		}
		sent = true
		return nil
	}
	if t := c.cold; t != nil {
		c.cold = nil
		try := out.Clone(out.Context())
		if err := rewind(try); err != nil {
			return nil, err
		}
		try.URL.Scheme, try.URL.Host = u.g.scheme, t.addr
		setColdHeaders(try.Header, c.route)
		resp, err := u.base.RoundTrip(try)
		if err != nil && !replayable {
			return nil, err
		}
		if err == nil {
			if !replayable || !noReplica(resp) {
				resp.Header.Del(httptrigger.HeaderUnavailable)
				return resp, nil
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
			_ = resp.Body.Close()
		}
		// That worker cannot serve it: wait for a replica instead.
	}
	var tried map[*replica]bool
	for attempt := 0; ; {
		rep := c.first
		if c.first = nil; rep == nil {
			rep = c.route.pick(tried)
		}
		if rep == nil {
			// Scaled to zero (autoscaled functions), or every replica in
			// this table went away (a rollout, a scale-down): hold the
			// request until a replica is ready, after the table has
			// changed if the ones it had were tried.
			fresh, err := u.g.waitForReplica(out.Context(), c.route, len(tried) > 0)
			if err != nil {
				return nil, err
			}
			c.route, tried = fresh, nil
			continue
		}
		try := u.tryOf(out)
		if err := rewind(try); err != nil {
			return nil, err
		}
		try.URL.Scheme, try.URL.Host = u.g.scheme, rep.addr
		try.Header.Set(httptrigger.HeaderInstance, rep.instance)
		try.Header.Set(httptrigger.HeaderRoute, c.route.settings.Route)
		rep.inFlight.Add(1)
		resp, err := u.base.RoundTrip(try)
		attempt++
		if err != nil {
			rep.inFlight.Add(-1)
			// A worker that could not be reached (nothing was sent), or
			// that went away under an idempotent request (its node lost,
			// its process killed): another replica may take it.
			if !replayable || !unsent(err) && !idempotent(out.Method) || attempt >= maxAttempts || out.Context().Err() != nil {
				return nil, err
			}
			if tried == nil {
				tried = map[*replica]bool{}
			}
			tried[rep] = true
			// Only to a replica of this table: a worker that cannot be
			// reached may stay in the next ones for a while.
			if c.first = c.route.pick(tried); c.first == nil {
				return nil, err
			}
			continue
		}
		if replayable && attempt < maxAttempts && retryable(resp, out.Method) {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
			_ = resp.Body.Close()
			rep.inFlight.Add(-1)
			if tried == nil {
				tried = map[*replica]bool{}
			}
			tried[rep] = true
			continue
		}
		c.obs.answeredBy(rep.generation)
		saturated := resp.Header.Get(httptrigger.HeaderUnavailable) == httptrigger.UnavailableSaturated
		c.load.answered(rep.generation, failedAnswer(resp.StatusCode, saturated), time.Now())
		resp.Header.Del(httptrigger.HeaderUnavailable)
		resp.Body = &countedBody{ReadCloser: resp.Body, rep: rep}
		return resp, nil
	}
}

// tryOf is a copy of out to send to one replica. out is the proxy's own
// copy of the client's request; a request the worker transport sends
// itself (sendsInMemory) is written whole before RoundTrip returns, so
// its tries can share out's header, each naming its replica in it: the
// copy is shallow, but for the URL. Any other request is cloned, as
// net/http's Transport may still read a request's header after
// RoundTrip returned an error.
func (u *upstream) tryOf(out *http.Request) *http.Request {
	if !sendsInMemory(out) {
		return out.Clone(out.Context())
	}
	try := new(http.Request)
	*try = *out
	target := *out.URL
	try.URL = &target
	return try
}

// replayLimit is the largest request body the gateway reads before
// choosing a replica, so that it can offer the request to another replica
// when the first one's worker no longer serves it (a rollout or a
// scale-down racing the route table). Larger bodies stream through and
// cannot be replayed.
const replayLimit = 64 << 10

// bufferSmallBody reads a body of known length up to replayLimit into
// memory and makes it replayable (GetBody).
func bufferSmallBody(req *http.Request) error {
	if req.ContentLength <= 0 || req.ContentLength > replayLimit {
		return nil
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return err
	}
	req.Body = io.NopCloser(bytes.NewReader(body))
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return nil
}

// retryable reports whether another replica may take a request its worker
// answered 503 without having run it (noReplica), or having been stopped
// under it before it answered, when running it again is harmless (an
// idempotent method).
func retryable(resp *http.Response, method string) bool {
	return noReplica(resp) || resp.StatusCode == http.StatusServiceUnavailable &&
		resp.Header.Get(httptrigger.HeaderUnavailable) == httptrigger.UnavailableStopped && idempotent(method)
}

// unsent says whether a transport error came before anything of the
// request was sent: the worker's address could not be dialed.
func unsent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// idempotent says whether a request of method may be sent again with the
// same effect (RFC 9110, 9.2.2).
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// noReplica reports whether a worker answered that it does not serve the
// replica (or function) the request named.
func noReplica(resp *http.Response) bool {
	return resp.StatusCode == http.StatusServiceUnavailable &&
		resp.Header.Get(httptrigger.HeaderUnavailable) == httptrigger.UnavailableNoReplica
}

// countedBody keeps a replica's in-flight count until the response is read.
type countedBody struct {
	io.ReadCloser
	rep  *replica
	done atomic.Bool
}

func (b *countedBody) Close() error {
	if b.done.CompareAndSwap(false, true) {
		b.rep.inFlight.Add(-1)
	}
	return b.ReadCloser.Close()
}
