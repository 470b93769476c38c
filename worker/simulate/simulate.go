// Package simulate runs hollow nodes, as Kubernetes' kubemark does: many
// simulated workers in one process, each a real member of the cluster with
// its own node certificate and gRPC session, which accept the instances
// assigned to them and report them Running without running anything. It
// is the worker side with the runtimes taken out, for sizing and
// benchmarking a control plane (`wasmorch simulate`, `make bench-scale`).
package simulate

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/errdefs"
)

// Simulator runs Config.Nodes hollow nodes.
type Simulator struct {
	cfg   Config
	token *auth.Token // nil without a join token
	slots chan struct{}
	nodes []*hollowNode

	joinMu   sync.Mutex
	joinConn *grpc.ClientConn // shared by every join; nil until the first

	joined     atomic.Int64
	registered atomic.Int64
	joins      atomic.Int64
	sessions   atomic.Int64
	instances  atomic.Int64
	reports    atomic.Int64
	statuses   atomic.Int64
	lastErr    atomic.Pointer[string]
	started    atomic.Bool
}

// Stats is what a Simulator has done so far.
type Stats struct {
	Nodes      int   // hollow nodes simulated
	Joined     int   // nodes holding a certificate
	Registered int   // nodes with a session up (their desired set received)
	Joins      int64 // nodes that joined with the token in this run
	Sessions   int64 // sessions established, reconnections included
	Instances  int64 // instances assigned to the nodes now
	Reports    int64 // ReportStatus calls answered
	Statuses   int64 // statuses in them
	// LastError is the latest error a node met (it retries), "" if none.
	LastError string
}

// New validates cfg and prepares the nodes; nothing is read or dialled
// until Run.
func New(cfg Config) (*Simulator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Simulator{cfg: cfg, slots: make(chan struct{}, cfg.Concurrency)}
	if cfg.JoinToken != "" {
		tok, err := auth.ParseToken(cfg.JoinToken)
		if err != nil {
			return nil, errdefs.Invalidf("simulate: join token: %v", err)
		}
		s.token = &tok
	}
	for i := range cfg.Nodes {
		name := cfg.NodeName(i)
		s.nodes = append(s.nodes, &hollowNode{
			sim: s, index: i, name: name, dir: filepath.Join(cfg.DataDir, name),
			set: newInstanceSet(name), dirty: make(chan struct{}, 1),
		})
	}
	return s, nil
}

// Run simulates the nodes until ctx is done, then closes every
// connection. It fails at once when a node has no certificate and there
// is no join token, and when the control plane refuses a join or a
// registration; it retries everything else.
func (s *Simulator) Run(ctx context.Context) (err error) {
	if !s.started.CompareAndSwap(false, true) {
		return errdefs.Preconditionf("simulate: Run called twice")
	}
	defer func() {
		s.joinMu.Lock()
		if s.joinConn != nil {
			_ = s.joinConn.Close()
		}
		s.joinMu.Unlock()
	}()
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("simulate: creating %s: %w", s.cfg.DataDir, err)
	}
	now := time.Now()
	for _, n := range s.nodes {
		id, why, err := loadIdentity(n.dir, n.name, s.token, now)
		if err != nil {
			return fmt.Errorf("simulate: node %s: %w", n.name, err)
		}
		if id == nil && s.token == nil {
			return errdefs.Preconditionf("simulate: node %s cannot join the cluster: %s and no join token was given (create one on the server with 'wasmorch token create' and pass it as --token)", n.name, why)
		}
		n.id = id
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, n := range s.nodes {
		g.Go(func() error { return n.run(gctx) })
	}
	err = g.Wait()
	if ctx.Err() != nil && err == nil {
		return nil
	}
	return err
}

// Stats returns what the simulator has done so far; it may be called at
// any time, from any goroutine.
func (s *Simulator) Stats() Stats {
	st := Stats{
		Nodes:      len(s.nodes),
		Joined:     int(s.joined.Load()),
		Registered: int(s.registered.Load()),
		Joins:      s.joins.Load(),
		Sessions:   s.sessions.Load(),
		Instances:  s.instances.Load(),
		Reports:    s.reports.Load(),
		Statuses:   s.statuses.Load(),
	}
	if e := s.lastErr.Load(); e != nil {
		st.LastError = *e
	}
	return st
}

// noteError records what went wrong for a node, for Stats and the debug
// log: with thousands of nodes, one line each would drown the rest.
func (s *Simulator) noteError(node, doing string, err error) {
	if err == nil {
		return
	}
	msg := fmt.Sprintf("node %s %s: %v", node, doing, err)
	s.lastErr.Store(&msg)
	s.cfg.Logger.Debug("hollow node", "node", node, "doing", doing, "err", err)
}

// targetOf is the gRPC target for the servers: one address as is, or
// several behind a resolver of their own (pick-first: the first that
// answers).
func targetOf(servers []string) (string, []grpc.DialOption) {
	if len(servers) == 1 {
		return "passthrough:///" + servers[0], nil
	}
	addrs := make([]resolver.Address, len(servers))
	for i, a := range servers {
		addrs[i] = resolver.Address{Addr: a}
	}
	r := manual.NewBuilderWithScheme("wasmorch-simulate")
	r.InitialState(resolver.State{Addresses: addrs})
	return r.Scheme() + ":///" + strings.Join(servers, ","), []grpc.DialOption{grpc.WithResolvers(r)}
}

// connectParams keep gRPC's own reconnection within the session's
// backoff, so that nodes come back soon after a control-plane outage.
func connectParams(cfg Config) grpc.ConnectParams {
	b := backoff.DefaultConfig
	b.BaseDelay, b.MaxDelay = cfg.reconnectBase, cfg.reconnectMax
	return grpc.ConnectParams{Backoff: b, MinConnectTimeout: rpcTimeout}
}

// acquire takes one of the slots that bound how many nodes join or
// register at a time.
func acquire(ctx context.Context, slots chan struct{}) error {
	select {
	case slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func release(slots chan struct{}) { <-slots }

// jitter spreads the reconnections of many nodes: a wait in [d/2, d].
func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }

// sleep waits d or until ctx is done, and says whether it waited d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
