package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/funcserver"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// A Wasm service is a long-running Wasm instance that serves on a TCP
// listener (spec.port set on a wasm workload): the worker opens the
// listener, the wasm runtime preopens it for the guest (fd 3 onward,
// $LISTEN_FD), and the guest accepts connections on it. Replicas of one
// workload on one node cannot share a host port, so, as Kubernetes gives
// each pod its own address, the worker listens for each instance on a
// loopback port of its own choosing; the guest is told the workload's
// port in $PORT. An HTTP service (with a route) is then served as an HTTP
// container is (ctrfunc.go): the function server forwards the route's
// requests to the instance's listener through the same portProxy, with
// the same admission, limits, health checks, rollouts and canaries. A
// plain TCP service (spec.tcp) listens on the node's own port instead.
//
// The instance is Starting until the guest first waits for a connection
// (sock_accept, or poll_oneoff on its listener): the kernel completes
// connections to a listening socket whether or not anyone accepts them,
// so a dial proves nothing. A guest that has not done so within
// serviceAcceptWindow is reported NotAccepting, still Starting: it gets
// no traffic, and a rollout waiting for it fails at its progress
// deadline, as for a replica that never passes its health check.

// serviceAcceptWindow is how long a service's guest may take to accept
// connections before its instance is reported NotAccepting.
const serviceAcceptWindow = time.Minute

// Reasons of Wasm services: a guest that has not accepted connections
// within serviceAcceptWindow; a plain TCP service whose node port is
// taken (by another process, or another instance on the node).
const (
	ReasonNotAccepting = "NotAccepting"
	ReasonPortInUse    = "PortInUse"
)

// isWasmService says whether spec is a Wasm service: a wasm workload with
// a port (a fallback instance runs as a container: see runsAs).
func isWasmService(spec *pb.WorkloadSpec) bool {
	return kindOf(spec) == kindWasm && spec.GetPort() != 0
}

// accepter is a Wasm instance that tells when its guest accepts
// (wasmrt's instances with listeners).
type accepter interface {
	Accepting() <-chan struct{}
}

// startWasmService opens the instance's listener, starts the guest on it
// and, for an HTTP service, adds the replica that forwards the route's
// requests to it. The instance is Running once the guest accepts
// (awaitAccepting).
func (w *Worker) startWasmService(ctx context.Context, in *instance, rs runtimeapi.InstanceSpec, spec *pb.WorkloadSpec) (runtimeapi.Instance, time.Time, runtimeapi.Exit, bool) {
	port := int(spec.GetPort())
	addr := "127.0.0.1:0"
	if spec.GetTcp() {
		addr = ":" + strconv.Itoa(port)
	}
	f, bound, err := openListener(ctx, addr)
	if err != nil {
		exit := runtimeapi.Exit{Reason: runtimeapi.ReasonStartError, Message: fmt.Sprintf("the service's listener on %s: %v", addr, err)}
		if spec.GetTcp() && errors.Is(err, syscall.EADDRINUSE) {
			exit.Reason, exit.Message = ReasonPortInUse, fmt.Sprintf("port %d is in use on node %s", port, w.cfg.NodeName)
		}
		return nil, time.Time{}, exit, false
	}
	rs.Listeners = []*os.File{f}
	rs.Env = append(rs.Env, "PORT="+strconv.Itoa(port))
	var rep atomic.Pointer[funcserver.Replica]
	var quiet atomic.Bool // the start failed: its exit is not the supervisor's
	onExit := rs.OnExit
	rs.OnExit = func(e runtimeapi.Exit) {
		if r := rep.Load(); r != nil {
			sctx, cancel := context.WithTimeout(context.Background(), replicaStopOnExit)
			r.Stop(sctx, 0)
			cancel()
		}
		_ = f.Close()
		if !quiet.Load() {
			onExit(e)
		}
	}
	startedAt := w.clock.Now()
	inst, err := in.rt.Start(ctx, rs)
	if err != nil {
		_ = f.Close()
		return nil, time.Time{}, startExit(err), false
	}
	a, ok := inst.(accepter)
	if !ok {
		quiet.Store(true)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.stopGrace+stopSlack)
		inst.Stop(sctx, w.stopGrace)
		cancel()
		msg := fmt.Sprintf("runtime %q on node %s cannot preopen sockets", in.rt.Name(), w.cfg.NodeName)
		return nil, time.Time{}, runtimeapi.Exit{Reason: runtimeapi.ReasonStartError, Message: msg, Permanent: true}, false
	}
	svc := &wasmService{Instance: inst, accepter: a, addr: bound, port: port}
	if spec.GetHttp() == nil {
		return svc, startedAt, runtimeapi.Exit{}, false
	}
	settings := httptrigger.Effective(spec.GetHttp())
	r, err := w.funcs.Add(funcserver.ReplicaSpec{
		ID:       in.id(),
		Workload: in.rec.GetWorkload(),
		Settings: settings,
		Function: newPortProxy(svc, bound, settings.Concurrency),
		Logs:     in.log,
	})
	if err != nil {
		quiet.Store(true)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.stopGrace+stopSlack)
		inst.Stop(sctx, w.stopGrace)
		cancel()
		return nil, time.Time{}, runtimeapi.Exit{Reason: runtimeapi.ReasonStartError, Message: err.Error()}, false
	}
	rep.Store(r)
	svc.rep = r
	select {
	case <-inst.Done():
		// Exited before the replica was stored: OnExit could not stop it.
		r.Stop(ctx, 0)
	default:
	}
	return svc, startedAt, runtimeapi.Exit{}, false
}

// openListener listens on addr and returns the listener as a file for
// the runtime, and the address it is bound to.
func openListener(ctx context.Context, addr string) (*os.File, string, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, "", err
	}
	defer l.Close() // the file is a duplicate
	f, err := l.(*net.TCPListener).File()
	if err != nil {
		return nil, "", err
	}
	bound := l.Addr().String()
	if tcp, ok := l.Addr().(*net.TCPAddr); ok && tcp.IP.IsUnspecified() {
		bound = net.JoinHostPort("127.0.0.1", strconv.Itoa(tcp.Port))
	}
	return f, bound, nil
}

// wasmService is the run of a Wasm service: its instance, where its
// listener is, and for an HTTP service the replica that forwards the
// route's requests to it.
type wasmService struct {
	runtimeapi.Instance
	accepter
	addr string              // the listener, as the worker dials it
	port int                 // the workload's port ($PORT)
	rep  *funcserver.Replica // nil for a plain TCP service
}

var (
	_ runtimeapi.Dialer   = (*wasmService)(nil)
	_ runtimeapi.Measured = (*wasmService)(nil)
	_ healthProber        = (*wasmService)(nil)
)

// DialContext implements runtimeapi.Dialer: the listener is on the host.
func (s *wasmService) DialContext(ctx context.Context, network, _ string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, s.addr)
}

// Usage implements runtimeapi.Measured for the instance.
func (s *wasmService) Usage() runtimeapi.Usage {
	if m, ok := s.Instance.(runtimeapi.Measured); ok {
		return m.Usage()
	}
	return runtimeapi.Usage{}
}

// Probe implements healthProber through the replica (an HTTP service's).
func (s *wasmService) Probe(ctx context.Context, timeout time.Duration) funcserver.ProbeResult {
	if s.rep == nil {
		return funcserver.ProbeResult{Skipped: true}
	}
	return s.rep.Probe(ctx, timeout)
}

// Stop lets the requests in flight finish (within grace), then stops the
// instance.
func (s *wasmService) Stop(ctx context.Context, grace time.Duration) runtimeapi.Exit {
	begun := time.Now()
	if s.rep != nil {
		s.rep.Stop(ctx, grace)
	}
	return s.Instance.Stop(ctx, max(0, grace-time.Since(begun)))
}

// waiting is what a service's status says until its guest accepts.
func (s *wasmService) waiting() string {
	return fmt.Sprintf("waiting for the guest to accept connections on its listener (port %d, $LISTEN_FD)", s.port)
}

// awaitAccepting reports run, start attempt gen of in, Running once its
// guest accepts (or, with a health path, starts its health checks then),
// and NotAccepting if it has not after serviceAcceptWindow.
func (w *Worker) awaitAccepting(ctx context.Context, in *instance, gen uint32, svc *wasmService) {
	late := make(chan struct{})
	t := w.clock.AfterFunc(serviceAcceptWindow, func() { close(late) })
	defer t.Stop()
	for {
		select {
		case <-svc.Accepting():
			w.serviceAccepting(ctx, in, gen, svc)
			return
		case <-late:
			late = nil
			in.mu.Lock()
			if in.gen == gen && in.run != nil && !in.stopping && !in.final {
				st := w.newStatus(in, pb.InstanceState_INSTANCE_STATE_STARTING, ReasonNotAccepting,
					fmt.Sprintf("the guest has not accepted connections on its listener (port %d, $LISTEN_FD) within %s: it gets no traffic until it does", svc.port, serviceAcceptWindow))
				st.StartedUnixNano = in.startedAt.UnixNano()
				w.setStatusLocked(in, st)
			}
			in.mu.Unlock()
		case <-svc.Done():
			return
		case <-ctx.Done():
			return
		}
	}
}

// serviceAccepting reports a service whose guest accepts: Running, or
// Starting until a health check passes.
func (w *Worker) serviceAccepting(ctx context.Context, in *instance, gen uint32, svc *wasmService) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.gen != gen || in.run == nil || in.stopping || in.final {
		return
	}
	st := w.newStatus(in, pb.InstanceState_INSTANCE_STATE_RUNNING, "", "")
	if p, set, ok := healthSettings(svc, in.rec.GetSpec()); ok {
		st = w.newStatus(in, pb.InstanceState_INSTANCE_STATE_STARTING, "", "waiting for a health check (GET "+set.HealthPath+") to pass")
		go w.checkHealth(ctx, in, gen, p, svc.Done(), set)
	}
	st.StartedUnixNano = in.startedAt.UnixNano()
	w.setStatusLocked(in, st)
}
