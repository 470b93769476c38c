package worker

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wasmorch/wasmorch/internal/httpstatus"
	"github.com/wasmorch/wasmorch/internal/httptrigger"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// The local function listener (Config.LocalHTTPAddr, `agent --local-http`,
// off by default) serves the HTTP functions placed on this node to the
// clients of its own site, by their routes, as a gateway would, in plain
// HTTP and without the gateways' client certificate: it is how an edge
// site reaches its functions while its uplink is down (docs/edge.md). It
// answers from the function replicas this worker runs, whether or not the
// control plane can be reached, and, for a route with none running here,
// from a cold replica of the function, when the function is one of those
// the control plane said this node may start cold (localcold.go); an
// unknown path is answered 404.
// What it exposes is what the gateways already expose to anyone who can
// reach them, the functions' routes; bind it to the site's network.

// localRoute is one route of the functions this node runs, and the
// replicas (instance IDs) that serve it, with their generations, and the
// function that may start cold there when none does.
type localRoute struct {
	settings httptrigger.Settings
	workload string
	ids      []string
	gens     map[string]int64 // by instance ID
	cold     *localCold       // nil: none (localcold.go)
}

// localRoutes is the local listener's route table, kept as instances are
// created and forgotten, and as the local functions change, so that a
// request costs the routes of this node's functions, not its instances.
type localRoutes struct {
	mu      sync.RWMutex
	routes  []*localRoute          // host-specific first, then the longest route first, as the gateway
	cold    map[string]*localRoute // by the workload of their cold function
	next    atomic.Uint64          // turns between replicas
	metrics *localMetrics          // nil without a registry
}

// findLocked is the route of settings, nil when there is none.
func (t *localRoutes) findLocked(set httptrigger.Settings) (*localRoute, int) {
	for i, r := range t.routes {
		if r.settings.Route == set.Route && r.settings.Host == set.Host {
			return r, i
		}
	}
	return nil, -1
}

// insertLocked adds r in its place in the order of the routes.
func (t *localRoutes) insertLocked(r *localRoute) {
	t.routes = append(t.routes, r)
	slices.SortFunc(t.routes, func(a, b *localRoute) int {
		x, y := a.settings, b.settings
		if (x.Host != "") != (y.Host != "") {
			if x.Host != "" {
				return -1
			}
			return 1
		}
		return cmp.Or(len(y.Route)-len(x.Route), strings.Compare(x.Route, y.Route), strings.Compare(x.Host, y.Host))
	})
}

// pruneLocked drops r when nothing serves it any more.
func (t *localRoutes) pruneLocked(r *localRoute) {
	if len(r.ids) > 0 || r.cold != nil {
		return
	}
	if _, i := t.findLocked(r.settings); i >= 0 && t.routes[i] == r {
		t.routes = slices.Delete(t.routes, i, i+1)
	}
}

func functionSettings(rec *pb.Instance) (httptrigger.Settings, bool) {
	h := rec.GetSpec().GetHttp()
	if h == nil {
		return httptrigger.Settings{}, false
	}
	return httptrigger.Effective(h), true
}

// add makes rec's replica serve its route.
func (t *localRoutes) add(rec *pb.Instance) {
	set, ok := functionSettings(rec)
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if r, _ := t.findLocked(set); r != nil {
		r.ids = append(r.ids, rec.GetId())
		r.gens[rec.GetId()] = rec.GetGeneration()
		r.settings = set // the newest replica's settings (a rollout changes them)
		r.workload = rec.GetWorkload()
		return
	}
	t.insertLocked(&localRoute{settings: set, workload: rec.GetWorkload(), ids: []string{rec.GetId()},
		gens: map[string]int64{rec.GetId(): rec.GetGeneration()}})
}

// remove takes rec's replica off its route.
func (t *localRoutes) remove(rec *pb.Instance) {
	set, ok := functionSettings(rec)
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if r, _ := t.findLocked(set); r != nil {
		r.ids = slices.DeleteFunc(r.ids, func(id string) bool { return id == rec.GetId() })
		delete(r.gens, rec.GetId())
		t.pruneLocked(r)
	}
}

// localMatch is a request's route: its settings, its workload, and its
// replicas from the next one's turn, with their generations, and the
// function that may start cold there (nil: none).
type localMatch struct {
	settings httptrigger.Settings
	workload string
	ids      []string
	gens     []int64
	cold     *localCold
}

// match finds the route of a request and its replicas, starting from the
// next one's turn.
func (t *localRoutes) match(host, path string) (localMatch, bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(host)
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, r := range t.routes {
		if r.settings.Host != "" && r.settings.Host != host || !httptrigger.Matches(r.settings.Route, path) {
			continue
		}
		m := localMatch{settings: r.settings, workload: r.workload, cold: r.cold}
		if n := len(r.ids); n > 0 {
			first := int(t.next.Add(1) % uint64(n))
			m.ids, m.gens = make([]string, 0, n), make([]int64, 0, n)
			m.ids = append(append(m.ids, r.ids[first:]...), r.ids[:first]...)
			for _, id := range m.ids {
				m.gens = append(m.gens, r.gens[id])
			}
		}
		return m, true
	}
	return localMatch{}, false
}

// listenLocal binds the local function listener, if one is configured (in
// New).
func (w *Worker) listenLocal(ctx context.Context) error {
	if w.cfg.LocalHTTPAddr == "" {
		return nil
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", w.cfg.LocalHTTPAddr)
	if err != nil {
		return fmt.Errorf("worker: local function listener on %s: %w", w.cfg.LocalHTTPAddr, err)
	}
	w.localLis = lis
	w.local = &localRoutes{cold: map[string]*localRoute{}, metrics: newLocalMetrics(w.cfg.Registry)}
	return nil
}

// LocalHTTPAddr is the address the local function listener is bound to,
// "" without one.
func (w *Worker) LocalHTTPAddr() string {
	if w.localLis == nil {
		return ""
	}
	return w.localLis.Addr().String()
}

func (w *Worker) closeLocal() {
	if w.localLis != nil {
		_ = w.localLis.Close()
	}
}

// serveLocal runs the local function listener until ctx is done.
func (w *Worker) serveLocal(ctx context.Context) error {
	if w.localLis == nil {
		return nil
	}
	srv := &http.Server{Handler: http.HandlerFunc(w.serveLocalRequest), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), functionServerShutdown)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			_ = srv.Close()
		}
	}()
	w.logger.Info("serving this node's functions to local clients, without TLS", "addr", w.LocalHTTPAddr())
	if err := srv.Serve(w.localLis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("worker: local function listener on %s: %w", w.LocalHTTPAddr(), err)
	}
	return nil
}

// serveLocalRequest serves one request of a local client: it names the
// replica and the route to the function server as a gateway does, and
// tries the next replica of the route when one is not served (not
// started yet, stopped): that answer comes before the body is read. As
// the gateway does, it gives every request an id of its own (the
// client's is replaced), on the request the function sees and on the
// answer, and counts it in the local function metrics.
func (w *Worker) serveLocalRequest(rw http.ResponseWriter, req *http.Request) {
	id := newRequestID()
	req.Header.Set(HeaderRequestID, id)
	rw.Header().Set(HeaderRequestID, id)
	m, ok := w.local.match(req.Host, req.URL.Path)
	if !ok {
		localRefuse(rw, id, http.StatusNotFound, "no function on this node serves "+req.URL.Path)
		return
	}
	obs := w.local.metrics.begin(m.workload, m.settings.Route)
	sw := httpstatus.New(rw)
	defer func() { obs.done(sw.Status()) }()
	for name := range req.Header {
		if strings.HasPrefix(name, "X-Wasmorch-") {
			req.Header.Del(name) // a client cannot name a replica or claim an address
		}
	}
	req.Header.Set(httptrigger.HeaderRemoteAddr, req.RemoteAddr)
	setForwardedHeaders(req)
	req.Header.Set(httptrigger.HeaderRoute, m.settings.Route)
	for i, inst := range m.ids {
		req.Header.Set(httptrigger.HeaderInstance, inst)
		lw := &localWriter{w: sw, h: http.Header{}, log: w.logger, id: inst, request: id}
		w.funcs.ServeHTTP(lw, req)
		if !lw.retry {
			if lw.wrote {
				obs.answeredBy(m.gens[i])
			}
			return
		}
	}
	if m.cold != nil {
		if !w.serveLocalCold(sw, req, id, m.cold, obs) { // localcold.go
			localRefuse(sw, id, http.StatusServiceUnavailable, "no replica of the function at "+m.settings.Route+" is running on this node, and it could not start here (the agent's log says why)")
		}
		return
	}
	localRefuse(sw, id, http.StatusServiceUnavailable, "no replica of the function at "+m.settings.Route+" is running on this node")
}

// HeaderRequestID carries the id of a request, as the gateway's does
// (controlplane/gateway).
const HeaderRequestID = "X-Request-Id"

// newRequestID is 64 random bits in hex, as the gateway's ids.
func newRequestID() string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], rand.Uint64())
	return hex.EncodeToString(b[:])
}

func localRefuse(rw http.ResponseWriter, id string, status int, msg string) {
	h := rw.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	rw.WriteHeader(status)
	_, _ = fmt.Fprintf(rw, "%s (request id %s)\n", msg, id)
}

// setForwardedHeaders sets the X-Forwarded-* headers as the gateway does,
// so that a function sees the same request whichever way it came.
func setForwardedHeaders(req *http.Request) {
	if ip, _, err := net.SplitHostPort(req.RemoteAddr); err == nil {
		if prior := req.Header["X-Forwarded-For"]; len(prior) > 0 {
			ip = strings.Join(prior, ", ") + ", " + ip
		}
		req.Header.Set("X-Forwarded-For", ip)
	} else {
		req.Header.Del("X-Forwarded-For")
	}
	req.Header.Set("X-Forwarded-Host", req.Host)
	req.Header.Set("X-Forwarded-Proto", "http")
}

// localWriter passes the function server's answer through without the
// protocol's headers, unless it says the replica is not served here
// (retry: another replica may take the request). A failure (no function
// answered: its X-Wasmorch-Failure) is logged, as the gateway does, and
// the client gets its status and a plain body.
type localWriter struct {
	w       http.ResponseWriter
	h       http.Header
	log     interface{ Warn(string, ...any) }
	id      string // the replica
	request string // the request's id
	wrote   bool
	retry   bool
	why     string // with retry: the function server's detail
}

func (l *localWriter) Header() http.Header { return l.h }

func (l *localWriter) WriteHeader(code int) {
	if l.wrote || l.retry {
		return
	}
	if code == http.StatusServiceUnavailable && l.h.Get(httptrigger.HeaderUnavailable) == httptrigger.UnavailableNoReplica {
		l.retry = true
		_, l.why = httptrigger.ParseFailure(l.h.Get(httptrigger.HeaderFailure))
		return
	}
	l.wrote = true
	if f := l.h.Get(httptrigger.HeaderFailure); f != "" {
		outcome, detail := httptrigger.ParseFailure(f)
		l.log.Warn("a local function request was not answered by the function", "request", l.request, "instance", l.id, "status", code, "outcome", outcome, "detail", detail)
	}
	dst := l.w.Header()
	for k, v := range l.h {
		if !strings.HasPrefix(k, "X-Wasmorch-") {
			dst[k] = v
		}
	}
	l.w.WriteHeader(code)
}

func (l *localWriter) Write(p []byte) (int, error) {
	if !l.wrote {
		l.WriteHeader(http.StatusOK)
	}
	if l.retry {
		return len(p), nil
	}
	return l.w.Write(p)
}

// Flush implements http.Flusher, which functions stream through.
func (l *localWriter) Flush() {
	if !l.wrote {
		l.WriteHeader(http.StatusOK)
	}
	if f, ok := l.w.(http.Flusher); ok && !l.retry {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the server's writer.
func (l *localWriter) Unwrap() http.ResponseWriter { return l.w }
