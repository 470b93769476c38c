package worker

import (
	"context"
	"encoding/base64"
	"net/http"
	"os"
	"strconv"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// edge: cold starts on the local function listener (docs/edge.md). A
// worker with a local listener says so when it registers
// (Node.local_http), and its session then carries the functions its node
// may start cold: the routed Wasm functions whose placement admits the
// node, each at its current generation with its configs and secrets
// resolved (Assignments.local_functions). The worker keeps them with its
// desired set, on its disk too (persist.go), so that they hold across an
// agent restarted while the control plane is out of reach, and fetches
// their modules into the module cache when told of them (bounded by it:
// they are not pinned, and one evicted while the node is cut off cannot
// start until it can be fetched again). A request of the local listener
// for such a function, when no replica of it runs here, is served by the
// function server's cold replica of that generation (funcserver's cold
// starts, as the gateways ask for them): the stopped replica's prepared
// function kept on this worker, or one prepared from the caches, with the
// function's limits — concurrency, queue, body, timeout, and its memory
// limit held from the node's budget per request — dropped after the
// worker's cold idle time. It does so whether or not the control plane
// can be reached. A function deleted, or changed so that it no longer
// admits the node, leaves the set at once while connected; while cut off
// the node serves what it last knew, as it runs the instances it last
// knew.

// localCold is a function that may start cold on a local route: what the
// function server is told of it.
type localCold struct {
	workload   string
	generation int64
	settings   httptrigger.Settings
	key        string // httptrigger.HeaderWorkload: "workload/generation"
	spec       string // httptrigger.HeaderSpec: the spec, in-process only
}

func newLocalCold(f *pb.LocalFunction) (*localCold, bool) {
	h := f.GetSpec().GetHttp()
	if h == nil || f.GetWorkload() == "" {
		return nil, false
	}
	b, err := proto.Marshal(f.GetSpec())
	if err != nil {
		return nil, false
	}
	return &localCold{workload: f.GetWorkload(), generation: f.GetGeneration(), settings: httptrigger.Effective(h),
		key: f.GetWorkload() + "/" + strconv.FormatInt(f.GetGeneration(), 10), spec: base64.RawURLEncoding.EncodeToString(b)}, true
}

// setCold makes f the function that may start cold on its route,
// replacing its previous version.
func (t *localRoutes) setCold(f *pb.LocalFunction) {
	c, ok := newLocalCold(f)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropColdLocked(f.GetWorkload())
	if !ok {
		return
	}
	r, _ := t.findLocked(c.settings)
	if r == nil {
		r = &localRoute{settings: c.settings, workload: c.workload, gens: map[string]int64{}}
		t.insertLocked(r)
	}
	r.cold = c
	t.cold[c.workload] = r
}

// dropCold removes workload's function from the local routes.
func (t *localRoutes) dropCold(workload string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dropColdLocked(workload)
}

func (t *localRoutes) dropColdLocked(workload string) {
	r := t.cold[workload]
	if r == nil {
		return
	}
	delete(t.cold, workload)
	if r.cold != nil && r.cold.workload == workload {
		r.cold = nil
	}
	t.pruneLocked(r)
}

// replaceCold makes fns the functions that may start cold.
func (t *localRoutes) replaceCold(fns []*pb.LocalFunction) {
	t.mu.Lock()
	names := make([]string, 0, len(t.cold))
	for name := range t.cold {
		names = append(names, name)
	}
	for _, name := range names {
		t.dropColdLocked(name)
	}
	t.mu.Unlock()
	for _, f := range fns {
		t.setCold(f)
	}
}

// applyLocalFunctions brings the local routes and the module cache up to
// date with what a session message says of the local functions, once
// the desired set has taken it.
func (w *Worker) applyLocalFunctions(a *pb.Assignments) {
	if w.local == nil || !a.GetLocalFunctionsFull() && len(a.GetLocalFunctions())+len(a.GetRemovedLocalFunctions()) == 0 {
		return
	}
	if a.GetLocalFunctionsFull() {
		w.local.replaceCold(w.desired.functions())
	} else {
		for _, name := range a.GetRemovedLocalFunctions() {
			w.local.dropCold(name)
		}
		for _, f := range a.GetLocalFunctions() {
			w.local.setCold(f)
		}
	}
	w.prefetchLocal(a.GetLocalFunctions())
}

// releaseLocalFunctions serves the local functions of a set restored from
// disk, once it runs (releaseRestored).
func (w *Worker) releaseLocalFunctions() {
	if w.local != nil {
		w.local.replaceCold(w.desired.functions())
	}
}

// prefetchLocal has the modules of fns fetched into the module cache, one
// at a time, in the background.
func (w *Worker) prefetchLocal(fns []*pb.LocalFunction) {
	if len(fns) == 0 {
		return
	}
	w.localFetchMu.Lock()
	for _, f := range fns {
		w.localFetch[f.GetSpec().GetModuleDigest()] = f.GetSpec().GetModuleSize()
	}
	w.localFetchMu.Unlock()
	select {
	case w.localFetchKick <- struct{}{}:
	default:
	}
}

// prefetchLoop fetches the modules prefetchLocal asks for until ctx is
// done. A module that cannot be fetched now (no session, the control
// plane refused it) is fetched at its first cold start instead.
func (w *Worker) prefetchLoop(ctx context.Context) {
	if w.local == nil {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.localFetchKick:
		}
		w.localFetchMu.Lock()
		todo := w.localFetch
		w.localFetch = map[string]int64{}
		w.localFetchMu.Unlock()
		for digest, size := range todo {
			if path, err := w.modules.Path(digest); err != nil {
				continue
			} else if _, err := os.Stat(path); err == nil {
				continue // held: not fetched, nor counted as a use
			}
			fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
			_, err := w.modules.Get(fctx, digest, size)
			cancel()
			if err != nil && ctx.Err() == nil {
				w.logger.Warn("could not fetch the module of a local function: it is fetched at its first cold start", "module", digest, "err", err)
			}
		}
	}
}

// localSpec reports whether spec is the spec of workload's function in
// the node's local set (the one the local listener passes on for a cold
// start), which alone carries its config and secret files.
func (w *Worker) localSpec(workload string, spec *pb.WorkloadSpec) bool {
	if w.local == nil {
		return false // only a local listener passes such a spec on
	}
	f, ok := w.desired.function(workload)
	return ok && proto.Equal(f.GetSpec(), spec)
}

// serveLocalCold serves a local request through c's cold replica; it
// reports false, having written nothing, when the function could not be
// started (the caller answers 503).
func (w *Worker) serveLocalCold(rw http.ResponseWriter, req *http.Request, id string, c *localCold, obs *localObserved) bool {
	req.Header.Del(httptrigger.HeaderInstance)
	req.Header.Set(httptrigger.HeaderWorkload, c.key)
	req.Header.Set(httptrigger.HeaderSpec, c.spec)
	req.Header.Set(httptrigger.HeaderRoute, c.settings.Route)
	lw := &localWriter{w: rw, h: http.Header{}, log: w.logger, id: "cold:" + c.key, request: id}
	w.funcs.ServeHTTP(lw, req)
	if !lw.retry {
		if lw.wrote {
			obs.answeredBy(c.generation)
		}
		return true
	}
	w.logger.Warn("a function could not start cold for a local request", "request", id, "function", c.key, "why", lw.why)
	return false
}
