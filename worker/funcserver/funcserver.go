// Package funcserver is a worker's HTTP function server. The gateway sends
// it requests for the function replicas assigned to this node, naming the
// replica in a header; each replica admits a bounded number of concurrent
// requests and holds a bounded queue beyond them (503 when both are full),
// enforces the body limit (413), and runs every request in a fresh sandbox
// through its runtime's prepared Function. A request of a Wasm function
// holds its function's memory limit from the node's memory budget while it
// runs (see LimitMemory): beyond the budget it waits briefly, then is
// answered 503.
package funcserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	"github.com/wasmorch/wasmorch/worker/membudget"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// Server routes requests to the replicas added to it. It is an
// http.Handler, safe for concurrent use.
type Server struct {
	log *slog.Logger

	mu         sync.RWMutex
	replicas   map[string]*Replica
	cold       map[string]*coldEntry // by "workload/generation"
	coldCfg    *ColdConfig
	closed     bool
	coldServed atomic.Int64
	memory     atomic.Pointer[memoryLimit] // nil: requests hold no memory
}

// memoryLimit is what LimitMemory set.
type memoryLimit struct {
	budget *membudget.Budget
	wait   time.Duration
}

// New returns a server with no replicas.
func New(log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{log: log, replicas: map[string]*Replica{}, cold: map[string]*coldEntry{}}
}

// LimitMemory makes every request of a replica with a MemoryBytes hold
// that much of b while it runs (its sandbox may grow to it): a request
// that finds too little free waits in b's line for at most wait (and its
// timeout), then is answered 503 with Retry-After, as a saturated replica
// answers. Call it before serving.
func (s *Server) LimitMemory(b *membudget.Budget, wait time.Duration) {
	s.memory.Store(&memoryLimit{budget: b, wait: wait})
}

// ReplicaSpec describes one replica to serve.
type ReplicaSpec struct {
	ID       string // the instance id the gateway names
	Workload string
	Settings httptrigger.Settings
	Function runtimeapi.Function // closed by the replica when it stops
	Logs     io.Writer           // the instance's logs
	// MemoryBytes is what each request holds from the node's memory
	// budget while it runs: a Wasm function's memory limit. Zero for a
	// function whose memory is reserved otherwise (a container's).
	MemoryBytes int64
	// ColdKey ("workload/generation"), if set, lets the server keep
	// Function for cold starts of that generation once the replica stops
	// (see cold.go).
	ColdKey string
}

// Add starts serving a replica; it is ready when Add returns. The replica
// implements runtimeapi.Instance: Stop removes it.
func (s *Server) Add(spec ReplicaSpec) (*Replica, error) {
	if spec.ID == "" || spec.Function == nil {
		return nil, fmt.Errorf("function server: replica spec needs an ID and a Function")
	}
	r := newReplica(s, spec)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.replicas[spec.ID]; ok {
		return nil, fmt.Errorf("function server: replica %s is already served", spec.ID)
	}
	s.replicas[spec.ID] = r
	return r, nil
}

func newReplica(s *Server, spec ReplicaSpec) *Replica {
	ctx, cancel := context.WithCancelCause(context.Background())
	return &Replica{
		spec:   spec,
		srv:    s,
		slots:  make(chan struct{}, spec.Settings.Concurrency),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}
}

func (s *Server) remove(r *Replica) {
	s.mu.Lock()
	if s.replicas[r.spec.ID] == r {
		delete(s.replicas, r.spec.ID)
	}
	s.mu.Unlock()
}

// InFlight is the number of requests the server is running or holding.
func (s *Server) InFlight() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	count := func(r *Replica) {
		r.mu.Lock()
		n += r.active + r.waiting
		r.mu.Unlock()
	}
	for _, r := range s.replicas {
		count(r)
	}
	for _, e := range s.cold {
		if e.rep != nil {
			count(e.rep)
		}
	}
	return n
}

// ServeHTTP serves one request for the replica its HeaderInstance names.
func (s *Server) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	id := req.Header.Get(httptrigger.HeaderInstance)
	if id == "" {
		if key := req.Header.Get(httptrigger.HeaderWorkload); key != "" {
			s.serveCold(w, req, key)
			return
		}
		http.Error(w, "404 not found: this is a worker's function server; call functions through the gateway", http.StatusNotFound)
		return
	}
	s.mu.RLock()
	r := s.replicas[id]
	s.mu.RUnlock()
	if r == nil {
		unavailable(w, httptrigger.UnavailableNoReplica, fmt.Sprintf("replica %s is not served by this worker (stopped or not started yet)", id))
		return
	}
	r.serve(w, req)
}

// unavailable answers 503 with Retry-After, and why (HeaderUnavailable)
// for the gateway.
func unavailable(w http.ResponseWriter, why, msg string) {
	w.Header().Set(httptrigger.HeaderUnavailable, why)
	outcome := outcomeNoReplica
	switch why {
	case httptrigger.UnavailableSaturated:
		outcome = outcomeSaturated
	case httptrigger.UnavailableStopped:
		outcome = outcomeStopped
	}
	fail(w, http.StatusServiceUnavailable, outcome, msg)
}

// Replica is one function instance served by the worker.
type Replica struct {
	spec  ReplicaSpec
	srv   *Server
	slots chan struct{} // one token per running request

	ctx    context.Context // canceled to end its requests at once
	cancel context.CancelCauseFunc

	mu       sync.Mutex
	active   int           // admitted requests (running or about to)
	waiting  int           // requests queued for a slot
	stopping bool          // no new requests
	grace    time.Duration // the stop's, once stopping
	idle     chan struct{} // closed when active+waiting drops to 0 while stopping
	done     chan struct{}
	exit     runtimeapi.Exit
	stopOnce sync.Once
}

var _ runtimeapi.Instance = (*Replica)(nil)

// ID implements runtimeapi.Instance.
func (r *Replica) ID() string { return r.spec.ID }

// Done implements runtimeapi.Instance: closed once stopped.
func (r *Replica) Done() <-chan struct{} { return r.done }

// Exit implements runtimeapi.Instance.
func (r *Replica) Exit() runtimeapi.Exit {
	select {
	case <-r.done:
		return r.exit
	default:
		return runtimeapi.Exit{}
	}
}

// Stop implements runtimeapi.Instance: the replica takes no new requests
// (the gateway's next look at the cluster stops sending them), lets those
// in flight finish for up to grace, then ends the rest, and releases its
// Function.
func (r *Replica) Stop(ctx context.Context, grace time.Duration) runtimeapi.Exit {
	r.stopOnce.Do(func() {
		r.srv.remove(r)
		r.mu.Lock()
		r.stopping, r.grace = true, grace
		r.idle = make(chan struct{})
		if r.active+r.waiting == 0 {
			close(r.idle)
		}
		idle := r.idle
		r.mu.Unlock()

		t := time.NewTimer(grace)
		select {
		case <-idle:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		r.cancel(fmt.Errorf("replica %s stopped", r.spec.ID))
		// A canceled call ends at the guest's next instruction, but one
		// blocked reading a slow client's body waits for the read: past
		// ctx, the Function is closed when that call ends, not under it.
		select {
		case <-idle:
			if !r.srv.adoptCold(r.spec) {
				r.spec.Function.Close()
			}
		case <-ctx.Done():
			go func() {
				<-idle
				r.spec.Function.Close()
			}()
		}
		r.exit = runtimeapi.Exit{Code: 0, Reason: runtimeapi.ReasonStopped, Message: "function replica stopped", At: time.Now()}
		close(r.done)
	})
	<-r.done
	return r.exit
}

// admit takes a slot for a request, queueing if all are busy and the
// queue has room. It reports false (and has answered) when it cannot.
func (r *Replica) admit(w http.ResponseWriter, req *http.Request) bool {
	r.mu.Lock()
	if r.stopping {
		r.mu.Unlock()
		unavailable(w, httptrigger.UnavailableNoReplica, fmt.Sprintf("replica %s is stopping", r.spec.ID))
		return false
	}
	select {
	case r.slots <- struct{}{}:
		r.active++
		r.mu.Unlock()
		return true
	default:
	}
	if r.waiting >= r.spec.Settings.Queue {
		r.mu.Unlock()
		unavailable(w, httptrigger.UnavailableSaturated, fmt.Sprintf("function %s is saturated: %d requests running and %d queued on replica %s",
			r.spec.Workload, r.spec.Settings.Concurrency, r.spec.Settings.Queue, r.spec.ID))
		return false
	}
	r.waiting++
	r.mu.Unlock()

	timeout := time.NewTimer(r.spec.Settings.Timeout)
	defer timeout.Stop()
	var why string
	select {
	case r.slots <- struct{}{}:
		r.mu.Lock()
		r.waiting--
		r.active++
		r.mu.Unlock()
		return true
	case <-req.Context().Done():
		why = ""
	case <-r.ctx.Done():
		why = "stopped"
	case <-timeout.C:
		why = "timeout"
	}
	r.mu.Lock()
	r.waiting--
	r.idleCheckLocked()
	r.mu.Unlock()
	switch why {
	case "stopped":
		unavailable(w, httptrigger.UnavailableNoReplica, fmt.Sprintf("replica %s stopped while the request waited", r.spec.ID))
	case "timeout":
		fail(w, http.StatusGatewayTimeout, runtimeapi.OutcomeTimeout, fmt.Sprintf("the request waited its whole timeout of %s for a free slot on replica %s", r.spec.Settings.Timeout, r.spec.ID))
	}
	return false
}

// borrowMemory takes what one request of the replica holds from the
// node's memory budget, waiting briefly in line when too little is free,
// and returns how to give it back. It reports false (and has answered)
// when it cannot.
func (r *Replica) borrowMemory(w http.ResponseWriter, req *http.Request) (giveBack func(), ok bool) {
	lim := r.srv.memory.Load()
	n := r.spec.MemoryBytes
	if lim == nil || n <= 0 {
		return func() {}, true
	}
	if lim.budget.TryBorrow(n) {
		// Free at once: no timer to arm (each one may wake the thread
		// waiting on the network).
		return func() { lim.budget.Return(n) }, true
	}
	wait := min(lim.wait, r.spec.Settings.Timeout)
	ctx, cancel := context.WithTimeoutCause(req.Context(), wait, errMemoryWait)
	defer cancel()
	stop := context.AfterFunc(r.ctx, cancel)
	defer stop()
	err := lim.budget.Borrow(ctx, n)
	switch {
	case err == nil:
		return func() { lim.budget.Return(n) }, true
	case req.Context().Err() != nil:
		return nil, false // the client went away
	case r.ctx.Err() != nil:
		unavailable(w, httptrigger.UnavailableNoReplica, fmt.Sprintf("replica %s stopped while the request waited for memory", r.spec.ID))
		return nil, false
	}
	why := fmt.Sprintf("waited %s", wait)
	if !errors.Is(err, errMemoryWait) {
		why = err.Error()
	}
	unavailable(w, httptrigger.UnavailableSaturated, fmt.Sprintf("function %s: the node's memory is in use: %s; %s",
		r.spec.Workload, memoryShortage(lim.budget, n), why))
	return nil, false
}

// errMemoryWait ends a request's wait for memory.
var errMemoryWait = errors.New("waited for memory")

// memoryShortage says why a request of n bytes finds no room in b.
func memoryShortage(b *membudget.Budget, n int64) string {
	u := b.Usage()
	return fmt.Sprintf("a request needs %s (the function's memory limit), %s of the node's %s are free (%s reserved by instances, %s held by requests running)",
		membudget.FormatBytes(n), membudget.FormatBytes(u.Free()), membudget.FormatBytes(u.Total), membudget.FormatBytes(u.Reserved), membudget.FormatBytes(u.Borrowed))
}

func (r *Replica) release() {
	<-r.slots
	r.mu.Lock()
	r.active--
	r.idleCheckLocked()
	r.mu.Unlock()
}

func (r *Replica) idleCheckLocked() {
	if r.stopping && r.active+r.waiting == 0 {
		select {
		case <-r.idle:
		default:
			close(r.idle)
		}
	}
}

func (r *Replica) serve(w http.ResponseWriter, req *http.Request) {
	set := r.spec.Settings
	if req.ContentLength > set.MaxBody {
		fail(w, http.StatusRequestEntityTooLarge, runtimeapi.OutcomeTooLarge,
			fmt.Sprintf("the body of %d bytes is over the function's limit of %d bytes", req.ContentLength, set.MaxBody))
		return
	}
	if !r.admit(w, req) {
		return
	}
	defer r.release()
	giveBack, ok := r.borrowMemory(w, req)
	if !ok {
		return
	}
	defer giveBack()

	route := req.Header.Get(httptrigger.HeaderRoute)
	if route == "" || !httptrigger.Matches(route, req.URL.Path) {
		route = "/"
	}
	script, pathInfo := httptrigger.Split(route, req.URL.Path)
	remote := req.Header.Get(httptrigger.HeaderRemoteAddr)
	if remote == "" {
		remote = req.RemoteAddr
	}
	for name := range req.Header {
		if strings.HasPrefix(name, "X-Wasmorch-") {
			req.Header.Del(name)
		}
	}

	ctx, cancel := context.WithCancelCause(req.Context())
	defer cancel(nil)
	stop := context.AfterFunc(r.ctx, func() { cancel(context.Cause(r.ctx)) })
	defer stop()

	cw := newCallWriter(w)
	res := r.spec.Function.Serve(ctx, cw, &runtimeapi.FunctionRequest{
		HTTP:       req,
		Body:       http.MaxBytesReader(w, req.Body, set.MaxBody),
		ScriptName: script,
		PathInfo:   pathInfo,
		RemoteAddr: remote,
		Timeout:    set.Timeout,
		Logs:       r.spec.Logs,
	})
	cw.finish(res)
	if res.Outcome != runtimeapi.OutcomeOK {
		r.srv.log.Debug("function call failed", "workload", r.spec.Workload, "instance", r.spec.ID, "request", req.Header.Get("X-Request-Id"),
			"status", strconv.Itoa(res.Status), "outcome", res.Outcome, "message", res.Message)
	}
	if res.Truncated {
		panic(http.ErrAbortHandler) // the client must see the response cut short
	}
	if !cw.wrote && req.Context().Err() == nil {
		// Never a 200 with no body for a call that was cut off.
		r.cutOff(w)
	}
}

// cutOff answers a request whose call ended without an answer while its
// client still waits: the replica stopped under it (its stop grace ran
// out), or the runtime wrote nothing for another reason.
func (r *Replica) cutOff(w http.ResponseWriter) {
	if r.ctx.Err() == nil {
		fail(w, http.StatusBadGateway, runtimeapi.OutcomeError, "the function ended without answering")
		return
	}
	r.mu.Lock()
	grace := r.grace
	r.mu.Unlock()
	unavailable(w, httptrigger.UnavailableStopped, fmt.Sprintf("replica %s stopped before the function answered: the request ran longer than the stop grace of %s", r.spec.ID, grace))
}
