package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/version"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

const (
	registerTimeout          = 5 * time.Second
	defaultHeartbeatInterval = time.Second
	// maxHeartbeatPatience bounds how long failed heartbeats keep a
	// session (heartbeat): past it a fresh connection is the better bet,
	// as TCP retransmits on an old one back off to tens of seconds.
	maxHeartbeatPatience = 10 * time.Second
	// maxRecvMsgSize bounds one message from the control plane: a full
	// desired set of 20,000 instances, each with its spec, is ~5 MB (a
	// delta carries only what changed).
	maxRecvMsgSize = 64 << 20
)

// dialOptions are the options of every connection to the control plane:
// mutual TLS with the node's certificate (identity.go).
func (w *Worker) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithTransportCredentials(w.clientTLS()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)),
	}
}

// serverOptions are the options of the worker's own gRPC service: mutual
// TLS, members only.
func (w *Worker) serverOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.Creds(w.serverTLS())}
}

// runSessions keeps a session with the control plane until ctx is done.
// Each round tries the servers in order and stays with the first that
// registers the node and sends its desired set; when that session ends the
// next round starts over from the first server. Rounds in which no session
// got that far back off exponentially. Instances keep running throughout:
// only the desired set changes them.
func (w *Worker) runSessions(ctx context.Context) error {
	delay := w.reconnectBase
	for {
		established := false
		for _, addr := range w.cfg.Servers {
			ok, err := w.session(ctx, addr)
			if ctx.Err() != nil {
				return nil
			}
			if !ok && errdefs.IsUnauthenticated(err) {
				return w.refused(err)
			}
			if ok {
				established = true
				w.logger.Warn("session with the control plane ended", "server", addr, "err", err)
				break
			}
			w.logger.Warn("no session with the control plane", "server", addr, "err", err)
		}
		if established {
			delay = w.reconnectBase
		} else {
			// A set restored from disk runs now (persist.go).
			w.releaseRestored("no member of the control plane can be reached")
			w.noteCutOff()
		}
		// Jitter spreads the reconnects of many workers after an outage.
		wait := delay/2 + rand.N(delay/2+1)
		if !sleep(ctx, realClock{}, wait) {
			return nil
		}
		if !established {
			delay = min(2*delay, w.reconnectMax)
		}
	}
}

// session registers with the server at addr and runs one session: the
// heartbeats and the stream of desired sets. It reports whether the session
// got as far as a desired set, and why it ended.
func (w *Worker) session(ctx context.Context, addr string) (bool, error) {
	cc, err := grpc.NewClient(addr, w.dialOptions()...)
	if err != nil {
		return false, fmt.Errorf("dialing %s: %w", addr, err)
	}
	defer cc.Close()
	client := pb.NewAgentClient(cc)

	rctx, cancel := context.WithTimeout(ctx, registerTimeout)
	resp, err := client.Register(rctx, &pb.RegisterRequest{Node: w.node()})
	cancel()
	if err != nil {
		return false, fmt.Errorf("registering with %s: %w", addr, errdefs.FromGRPC(err))
	}
	interval := time.Duration(resp.GetHeartbeatIntervalMs()) * time.Millisecond
	if interval <= 0 {
		interval = defaultHeartbeatInterval
	}
	grace := time.Duration(resp.GetNodeGraceMs()) * time.Millisecond
	w.reached(grace)
	w.logger.Info("registered with the control plane", "server", addr, "heartbeat", interval, "grace", grace, "labels", formatLabels(resp.GetLabels()))
	if len(w.cfg.Labels) > 0 && !maps.Equal(w.cfg.Labels, resp.GetLabels()) {
		w.logger.Warn("this node's labels are set by its join token or an admin, not by --labels: the ones asked for are not all in effect",
			"asked", formatLabels(w.cfg.Labels), "in effect", formatLabels(resp.GetLabels()), "change them with", "wasmorch node label "+w.cfg.NodeName+" KEY=VALUE")
	}

	g, gctx := errgroup.WithContext(ctx)
	// Deltas after the first set; resumed from the last message applied,
	// when the member still keeps the changes since (else a full set).
	stream, err := client.Session(gctx, &pb.SessionRequest{Node: w.cfg.NodeName, Deltas: true, ResumeRevision: w.desired.resumeRevision()})
	if err != nil {
		return false, fmt.Errorf("opening the session with %s: %w", addr, errdefs.FromGRPC(err))
	}
	w.setClient(client)
	defer w.setClient(nil)
	// The control plane may have missed reports while we were away, and
	// instances waiting to fetch their module were waiting for this.
	w.statuses.addAll(w.currentStatuses())
	w.retryFetchesNow()

	g.Go(func() error { return w.heartbeat(gctx, client, interval, grace) })
	renewed := w.renewedCh()
	g.Go(func() error {
		// Calls on this connection present the certificate it was made
		// with, which the members refuse once it expires: a renewed one
		// takes a new connection.
		select {
		case <-gctx.Done():
			return gctx.Err()
		case <-renewed:
			return errdefs.Unavailablef("the node's certificate was renewed: reconnecting with it")
		}
	})
	g.Go(func() error { return w.untilRuntimesChange(gctx) })
	established := false
	g.Go(func() error {
		for {
			a, err := stream.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					return errdefs.Unavailablef("the control plane closed the session")
				}
				return fmt.Errorf("session: %w", errdefs.FromGRPC(err))
			}
			established = true
			w.setDesired(a)
		}
	})
	err = g.Wait()
	return established, err
}

// heartbeat keeps the node's lease alive. The node stays Ready as long as
// one heartbeat gets through within its grace (the control plane's
// NodeGraceMs: 2 s by default, longer for a node on a flaky link, whose
// wasmorch.io/lost-after label sets it): a heartbeat that found no answer
// in time is tried again at the next tick, keeping the session, until half
// the grace (at most maxHeartbeatPatience) has passed since the last one
// that got through. Then, or when a member answers with an error, the
// session ends, so that the worker registers again, possibly elsewhere,
// with time left within its grace.
func (w *Worker) heartbeat(ctx context.Context, client pb.AgentClient, interval, grace time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	patience := min(grace/2, maxHeartbeatPatience)
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-w.conditionsChanged: // at once, not a heartbeat later
		}
		hctx, cancel := context.WithTimeout(ctx, max(interval, time.Second))
		_, err := client.Heartbeat(hctx, &pb.HeartbeatRequest{Node: w.cfg.NodeName, Conditions: w.disk.conditions()})
		cancel()
		switch {
		case err == nil:
			last = time.Now()
			w.reached(grace)
		case status.Code(err) == codes.DeadlineExceeded && time.Since(last)+interval < patience:
			w.logger.Debug("a heartbeat found no answer in time: trying again at the next", "since last answered", time.Since(last).Round(time.Millisecond), "grace", grace)
		default:
			return fmt.Errorf("heartbeat: %w", errdefs.FromGRPC(err))
		}
	}
}

// reached notes that the control plane answered, and the node's grace it
// said; a node that had been out of reach longer than its grace says so.
func (w *Worker) reached(grace time.Duration) {
	w.cutMu.Lock()
	defer w.cutMu.Unlock()
	if w.cutWarned {
		w.logger.Warn("the control plane can be reached again, after longer than this node's grace: instances it replaced elsewhere stop here as the session says", "out of reach", time.Since(w.lastReached).Round(time.Second))
	}
	w.lastReached, w.grace, w.cutWarned = time.Now(), grace, false
}

// noteCutOff says once, when no member could be reached for longer than
// the node's grace, that the control plane has declared the node lost.
func (w *Worker) noteCutOff() {
	w.cutMu.Lock()
	defer w.cutMu.Unlock()
	if w.cutWarned || w.lastReached.IsZero() || w.grace <= 0 || time.Since(w.lastReached) <= w.grace {
		return
	}
	w.cutWarned = true
	w.logger.Warn("no member of the control plane answered for longer than this node's grace: it counts the node lost and replaces its instances elsewhere; they keep running here until the link returns",
		"grace", w.grace, "out of reach", time.Since(w.lastReached).Round(time.Second))
}

func (w *Worker) node() *pb.Node {
	names := w.offeredRuntimes()
	return &pb.Node{
		Name:    w.cfg.NodeName,
		Address: w.advertise,
		Arch:    runtime.GOARCH,
		Os:      runtime.GOOS,
		Capacity: &pb.Resources{
			MemoryBytes: w.cfg.Allocatable(),
			CpuMillis:   int64(runtime.NumCPU()) * 1000,
			Instances:   w.cfg.MaxInstances,
		},
		Runtimes:    names,
		Labels:      maps.Clone(w.cfg.Labels),
		Version:     version.Version,
		HttpAddress: w.funcAdvertise,
		Conditions:  w.disk.conditions(),
		// state (storage.go)
		MaxScratchBytes: max(w.cfg.MaxScratchBytes, 0),
		AllowedMounts:   slices.Clone(w.cfg.AllowedMounts),
		// edge: its session carries the functions it may start cold
		// (localcold.go).
		LocalHttp: w.cfg.LocalHTTPAddr != "",
	}
}

func (w *Worker) setClient(c pb.AgentClient) {
	w.clientMu.Lock()
	defer w.clientMu.Unlock()
	w.client = c
}

// agentClient returns the client of the current session, or nil.
func (w *Worker) agentClient() pb.AgentClient {
	w.clientMu.Lock()
	defer w.clientMu.Unlock()
	return w.client
}

// fetchBlob streams the blob named digest from the control plane into dst.
// Without a session it fails at once: the instance retries with backoff
// rather than hold a start slot that cached modules could use.
func (w *Worker) fetchBlob(ctx context.Context, digest string, dst io.Writer) error {
	client := w.agentClient()
	if client == nil {
		return errdefs.Unavailablef("not connected to a control plane")
	}
	req := &pb.FetchBlobRequest{Digest: digest}
	if w.local != nil {
		// edge: a module of a local function, which no instance here
		// may run (localcold.go).
		req.LocalFunction = w.desired.functionRunning(digest)
	}
	stream, err := client.FetchBlob(ctx, req)
	if err != nil {
		return errdefs.FromGRPC(err)
	}
	var got, size int64 = 0, -1
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return errdefs.FromGRPC(err)
		}
		if size < 0 && chunk.GetSize() > 0 {
			size = chunk.GetSize()
		}
		got += int64(len(chunk.GetData()))
		if size >= 0 && got > size {
			return fmt.Errorf("the control plane sent more than the %d bytes it announced", size)
		}
		if _, err := dst.Write(chunk.GetData()); err != nil {
			return err
		}
	}
	if size >= 0 && got != size {
		return fmt.Errorf("the control plane sent %d of the %d bytes it announced", got, size)
	}
	return nil
}

// formatLabels writes labels as k=v,... in key order.
func formatLabels(labels map[string]string) string {
	parts := make([]string, 0, len(labels))
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}
