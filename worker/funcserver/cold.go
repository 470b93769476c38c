package funcserver

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	"github.com/wasmorch/wasmorch/internal/resources"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// Cold starts: the gateway sends a request for a function scaled to zero
// with the function's spec (HeaderWorkload, HeaderSpec) instead of a
// replica's id. The server serves it through a cold replica, with the
// function's own limits — concurrency, queue, body, timeout, memory (each
// request holds the function's memory limit from the node's budget) — as a
// replica would. The cold replica is the prepared function of the last
// replica of that generation that stopped here (its compiled module kept
// in memory), or else one prepared from the module and compile caches
// (ColdConfig.Prepare). It is dropped after ColdConfig.Idle without
// requests. The control plane places a real replica meanwhile; the gateway
// moves to it as soon as it is ready.

// DefaultColdIdle is how long a cold replica outlives its last request
// unless ColdConfig.Idle says otherwise: about twice the autoscaler's
// default idle period, so that a function scaled to zero keeps its
// compiled code for a while (its code, not instances: kilobytes for a
// small module).
const DefaultColdIdle = 10 * time.Minute

// ColdConfig enables cold starts.
type ColdConfig struct {
	// Prepare prepares a function from its spec.
	Prepare func(ctx context.Context, workload string, spec *pb.WorkloadSpec) (runtimeapi.Function, error)
	// Logs is where a cold replica's stderr goes.
	Logs func(workload string) io.Writer
	// Idle is how long a cold replica outlives its last request; zero:
	// DefaultColdIdle.
	Idle time.Duration
}

// EnableCold enables cold starts; without it the server answers them "no
// replica" and the gateway waits for one.
func (s *Server) EnableCold(c ColdConfig) {
	if c.Idle <= 0 {
		c.Idle = DefaultColdIdle
	}
	s.mu.Lock()
	s.coldCfg = &c
	s.mu.Unlock()
}

// coldEntry is one function's cold replica, or its preparation under way.
type coldEntry struct {
	ready chan struct{} // closed once rep or err is set
	rep   *Replica
	err   error
	timer *time.Timer // stops an idle replica
	began atomic.Bool // it has taken a request
}

// serveCold serves a request that names a function rather than a replica.
func (s *Server) serveCold(w http.ResponseWriter, req *http.Request, key string) {
	s.mu.Lock()
	cfg := s.coldCfg
	e := s.cold[key]
	if e == nil && cfg != nil && !s.closed {
		e = &coldEntry{ready: make(chan struct{})}
		s.cold[key] = e
		s.mu.Unlock()
		s.prepareEntry(req.Context(), e, key, req.Header.Get(httptrigger.HeaderSpec), cfg)
	} else {
		s.mu.Unlock()
	}
	if e == nil {
		unavailable(w, httptrigger.UnavailableNoReplica, "this worker does not serve functions without a replica")
		return
	}
	select {
	case <-e.ready:
	case <-req.Context().Done():
		return
	}
	if e.err != nil {
		s.log.Info("cold start failed", "function", key, "err", e.err)
		unavailable(w, httptrigger.UnavailableNoReplica, fmt.Sprintf("cold start of %s failed: %v", key, e.err))
		return
	}
	s.coldServed.Add(1)
	if !e.began.Swap(true) {
		s.log.Info("serving a function without a replica (cold start)", "function", key)
	}
	e.rep.serve(w, req)
	s.mu.Lock()
	if s.cold[key] == e {
		e.timer.Reset(s.coldCfg.Idle)
	}
	s.mu.Unlock()
}

// prepareEntry prepares e's function and publishes the outcome; a failure
// is forgotten, so that the next request tries again.
func (s *Server) prepareEntry(ctx context.Context, e *coldEntry, key, specHeader string, cfg *ColdConfig) {
	defer close(e.ready)
	workload, _, _ := strings.Cut(key, "/")
	spec := &pb.WorkloadSpec{}
	b, err := base64.RawURLEncoding.DecodeString(specHeader)
	if err == nil {
		err = proto.Unmarshal(b, spec)
	}
	if err == nil && spec.GetHttp() == nil {
		err = fmt.Errorf("the spec has no HTTP trigger")
	}
	var fn runtimeapi.Function
	if err == nil {
		// Not the request's context: the function outlives this request.
		fn, err = cfg.Prepare(context.WithoutCancel(ctx), workload, spec)
	}
	var rep *Replica
	if err == nil {
		rep = newReplica(s, ReplicaSpec{ID: "cold:" + key, Workload: workload, Settings: httptrigger.Effective(spec.GetHttp()), Function: fn, Logs: cfg.Logs(workload),
			MemoryBytes: resources.MemoryRequest(spec)})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case err != nil:
		e.err = err
		delete(s.cold, key)
	case s.closed:
		e.err = fmt.Errorf("the function server is stopping")
		delete(s.cold, key)
		go rep.Stop(context.Background(), 0)
	default:
		e.rep = rep
		e.timer = time.AfterFunc(cfg.Idle, func() { s.expireCold(key, e) })
	}
}

// adoptCold keeps the prepared function of a replica that stopped as the
// cold replica of its generation, if it has none yet; it reports whether
// it did (the function is then the cold replica's to close).
func (s *Server) adoptCold(spec ReplicaSpec) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if spec.ColdKey == "" || s.coldCfg == nil || s.closed || s.cold[spec.ColdKey] != nil {
		return false
	}
	key := spec.ColdKey
	e := &coldEntry{ready: make(chan struct{})}
	e.rep = newReplica(s, ReplicaSpec{ID: "cold:" + key, Workload: spec.Workload, Settings: spec.Settings, Function: spec.Function, Logs: s.coldCfg.Logs(spec.Workload),
		MemoryBytes: spec.MemoryBytes})
	e.timer = time.AfterFunc(s.coldCfg.Idle, func() { s.expireCold(key, e) })
	close(e.ready)
	s.cold[key] = e
	return true
}

// expireCold stops an idle cold replica (one busy now is looked at again
// after coldIdle).
func (s *Server) expireCold(key string, e *coldEntry) {
	e.rep.mu.Lock()
	busy := e.rep.active+e.rep.waiting > 0
	e.rep.mu.Unlock()
	s.mu.Lock()
	if busy || s.cold[key] != e {
		if s.cold[key] == e {
			e.timer.Reset(s.coldCfg.Idle)
		}
		s.mu.Unlock()
		return
	}
	delete(s.cold, key)
	s.mu.Unlock()
	e.rep.Stop(context.Background(), time.Minute)
}

// Close stops the cold replicas, letting their requests finish within
// grace; replicas added with Add are their owners' to stop.
func (s *Server) Close(grace time.Duration) {
	s.mu.Lock()
	s.closed = true
	var reps []*Replica
	for key, e := range s.cold {
		select {
		case <-e.ready:
			if e.rep != nil {
				e.timer.Stop()
				reps = append(reps, e.rep)
			}
		default: // its preparation sees closed
		}
		delete(s.cold, key)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range reps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), grace)
			defer cancel()
			r.Stop(ctx, grace)
		}()
	}
	wg.Wait()
}

// ColdRequests is how many requests cold replicas have taken.
func (s *Server) ColdRequests() int64 { return s.coldServed.Load() }

// ColdReplicas is how many cold replicas the server holds.
func (s *Server) ColdReplicas() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, e := range s.cold {
		if e.rep != nil {
			n++
		}
	}
	return n
}
