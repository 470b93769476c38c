package simulate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/version"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

const (
	defaultHeartbeatInterval = time.Second
	// maxRecvMsgSize bounds one message from the control plane, as the
	// real worker's does.
	maxRecvMsgSize = 64 << 20
	// maxBatch bounds the statuses of one report, as the real worker's
	// does.
	maxBatch      = 1000
	reportTimeout = 10 * time.Second
)

// hollowNode is one simulated worker: its own certificate and connection,
// a session with the control plane and the instances assigned to it. It
// runs three goroutines while a session is up (the stream, heartbeats,
// status reports) however many instances it holds.
type hollowNode struct {
	sim    *Simulator
	index  int
	name   string
	dir    string
	id     *identity
	set    *instanceSet
	dirty  chan struct{} // capacity 1: statuses are pending
	client pb.AgentClient
	deltas bool // the last session's control plane served deltas

	renewRetry time.Time // heartbeat goroutine only
}

// run keeps the node in the cluster until ctx is done: it joins if it has
// no certificate, then keeps a session, re-registering with jittered
// backoff whenever one ends. It returns an error only for what retrying
// cannot mend (a refused join, an invalid registration).
func (n *hollowNode) run(ctx context.Context) error {
	if n.id == nil {
		if err := n.join(ctx); err != nil || ctx.Err() != nil {
			return err
		}
	}
	n.sim.joined.Add(1)
	if n.client == nil {
		cc, err := dial(n.sim.cfg, n.clientTLS())
		if err != nil {
			return fmt.Errorf("node %s: %w", n.name, err)
		}
		defer cc.Close()
		n.client = pb.NewAgentClient(cc)
	}
	return n.runSessions(ctx)
}

// runSessions is the real worker's loop (worker/session.go): a session
// that got as far as a desired set resets the backoff; one that did not
// doubles it.
func (n *hollowNode) runSessions(ctx context.Context) error {
	delay := n.sim.cfg.reconnectBase
	for {
		established, err := n.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errdefs.IsInvalidArgument(err) {
			return fmt.Errorf("node %s: %w", n.name, err)
		}
		n.sim.noteError(n.name, "session", err)
		if established {
			delay = n.sim.cfg.reconnectBase
		}
		if !sleep(ctx, jitter(delay)) {
			return nil
		}
		if !established {
			delay = min(2*delay, n.sim.cfg.reconnectMax)
		}
	}
}

// session registers the node and runs one session: the stream of desired
// sets, heartbeats and status reports. It reports whether the session got
// as far as a desired set, and why it ended.
func (n *hollowNode) session(ctx context.Context) (established bool, err error) {
	s := n.sim
	if err := acquire(ctx, s.slots); err != nil {
		return false, err
	}
	var once sync.Once
	releaseSlot := func() { once.Do(func() { release(s.slots) }) }
	defer releaseSlot()

	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	resp, err := n.client.Register(rctx, &pb.RegisterRequest{Node: n.node()})
	cancel()
	if err != nil {
		return false, fmt.Errorf("registering: %w", errdefs.FromGRPC(err))
	}
	interval := time.Duration(resp.GetHeartbeatIntervalMs()) * time.Millisecond
	if interval <= 0 {
		interval = defaultHeartbeatInterval
	}
	g, gctx := errgroup.WithContext(ctx)
	req := n.sessionRequest()
	stream, err := n.client.Session(gctx, req)
	if err != nil {
		return false, fmt.Errorf("opening the session: %w", errdefs.FromGRPC(err))
	}
	// The control plane may have missed reports while the node was away.
	n.set.resendAll(time.Now().UnixNano())

	var up sync.Once // the first desired set arrived
	var deltas, first = false, true
	defer func() {
		if established {
			s.registered.Add(-1)
		}
	}()
	g.Go(func() error {
		for {
			a, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					return errdefs.Unavailablef("the control plane closed the session")
				}
				return fmt.Errorf("session: %w", errdefs.FromGRPC(err))
			}
			if first {
				deltas, first = n.servesDeltas(req, a), false
			}
			s.instances.Add(int64(n.set.update(a, !deltas || a.GetFull(), time.Now().UnixNano())))
			up.Do(func() {
				established = true
				s.registered.Add(1)
				s.sessions.Add(1)
				releaseSlot()
			})
			n.kick()
		}
	})
	g.Go(func() error { return n.heartbeat(gctx, interval) })
	g.Go(func() error { return n.sendStatuses(gctx) })
	n.kick()
	err = g.Wait()
	return established, err
}

// sessionRequest asks for deltas, as the real worker will: the full set
// once, then what changes; after a session that served deltas, from the
// revision last applied.
func (n *hollowNode) sessionRequest() *pb.SessionRequest {
	req := &pb.SessionRequest{Node: n.name, Deltas: true}
	if n.deltas {
		req.ResumeRevision = n.set.appliedRevision()
	}
	return req
}

// servesDeltas judges, from the first message of a session, whether the
// control plane serves deltas: one that does begins with the full set
// (full set), or resumes where asked; one that does not sends full sets
// only, never flagged full. It remembers the answer for the next session.
func (n *hollowNode) servesDeltas(req *pb.SessionRequest, first *pb.Assignments) bool {
	n.deltas = first.GetFull() || req.GetResumeRevision() > 0
	return n.deltas
}

// heartbeat keeps the node's lease alive; a failed heartbeat ends the
// session so that the node registers again.
func (n *hollowNode) heartbeat(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now := <-t.C:
			n.renewIfDue(ctx, n.client, now)
		}
		hctx, cancel := context.WithTimeout(ctx, max(interval, time.Second))
		_, err := n.client.Heartbeat(hctx, &pb.HeartbeatRequest{Node: n.name})
		cancel()
		if err != nil {
			return fmt.Errorf("heartbeat: %w", errdefs.FromGRPC(err))
		}
	}
}

// sendStatuses reports what changed, one ReportStatus call carrying every
// change since the last one (up to maxBatch), as soon as the previous call
// is answered. A failed report is retried after a pause.
func (n *hollowNode) sendStatuses(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-n.dirty:
		}
		for {
			batch := n.set.take(maxBatch)
			if len(batch) == 0 {
				break
			}
			rctx, cancel := context.WithTimeout(ctx, reportTimeout)
			_, err := n.client.ReportStatus(rctx, &pb.StatusBatch{Node: n.name, Statuses: batch})
			cancel()
			if err != nil {
				n.set.putBack(batch)
				if ctx.Err() != nil {
					return nil
				}
				n.sim.noteError(n.name, "reporting status", errdefs.FromGRPC(err))
				if !sleep(ctx, n.sim.cfg.reportRetry) {
					return nil
				}
				n.kick()
				break
			}
			n.sim.reports.Add(1)
			n.sim.statuses.Add(int64(len(batch)))
			n.set.acknowledged(batch, time.Now().UnixNano())
		}
	}
}

func (n *hollowNode) kick() {
	select {
	case n.dirty <- struct{}{}:
	default:
	}
}

// node is the record the node registers: this machine's arch and OS, the
// wasm runtime, the configured capacity and labels.
func (n *hollowNode) node() *pb.Node {
	cfg := n.sim.cfg
	return &pb.Node{
		Name: n.name,
		Arch: runtime.GOARCH,
		Os:   runtime.GOOS,
		Capacity: &pb.Resources{
			MemoryBytes: cfg.MemoryBytes,
			CpuMillis:   cfg.CPUMillis,
			Instances:   cfg.InstancesPerNode,
		},
		Runtimes: []string{runtimeWasm},
		Labels:   cfg.nodeLabels(n.index),
		Version:  version.Version,
	}
}
