package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/funcserver"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// An HTTP container function (Cloud Run style) is a long-running container
// that listens on $PORT inside its own network, served by the function
// server like a Wasm function: the same replica admission, queue, body
// limit and timeout, but each request is forwarded to the container rather
// than run in a fresh sandbox. The instance is Running once the container
// accepts connections on its port.

// DefaultContainerPort is where an HTTP container listens unless its spec
// says otherwise.
const DefaultContainerPort = 8080

const (
	// containerListenTimeout bounds how long a started container may take
	// to accept connections on its port.
	containerListenTimeout = time.Minute
	listenPollMin          = 10 * time.Millisecond
	listenPollMax          = 200 * time.Millisecond
	// replicaStopOnExit bounds removing the replica of a container that
	// exited, before the supervisor restarts it.
	replicaStopOnExit = 5 * time.Second
)

// startContainerFunction starts the container of an HTTP container
// function with PORT in its environment, waits until it listens there, and
// serves it as a function replica.
func (w *Worker) startContainerFunction(ctx context.Context, in *instance, rs runtimeapi.InstanceSpec, spec *pb.WorkloadSpec) (runtimeapi.Instance, time.Time, runtimeapi.Exit, bool) {
	port := int(spec.GetPort())
	if port == 0 {
		port = DefaultContainerPort
	}
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
		if !quiet.Load() {
			onExit(e)
		}
	}
	startedAt := w.clock.Now()
	ctr, err := in.rt.Start(ctx, rs)
	if err != nil {
		return nil, time.Time{}, startExit(err), false
	}
	dialer, ok := ctr.(runtimeapi.Dialer)
	fail := func(msg string, permanent bool) (runtimeapi.Instance, time.Time, runtimeapi.Exit, bool) {
		quiet.Store(true)
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.stopGrace+stopSlack)
		ctr.Stop(sctx, w.stopGrace)
		cancel()
		return nil, time.Time{}, runtimeapi.Exit{Reason: runtimeapi.ReasonStartError, Message: msg, Permanent: permanent}, false
	}
	if !ok {
		return fail(fmt.Sprintf("runtime %q on node %s cannot forward HTTP requests to its instances", in.rt.Name(), w.cfg.NodeName), true)
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	switch err := waitListening(ctx, dialer, addr); {
	case err == nil:
	case errors.Is(err, errExited), ctx.Err() != nil:
		// Its exit (or the shutdown) is the supervisor's to record.
		return ctr, startedAt, runtimeapi.Exit{}, false
	default:
		return fail(fmt.Sprintf("the container did not listen on port %d ($PORT): %v", port, err), false)
	}
	settings := httptrigger.Effective(spec.GetHttp())
	r, err := w.funcs.Add(funcserver.ReplicaSpec{
		ID:       in.id(),
		Workload: in.rec.GetWorkload(),
		Settings: settings,
		Function: newPortProxy(dialer, addr, settings.Concurrency),
		Logs:     in.log,
	})
	if err != nil {
		return fail(err.Error(), false)
	}
	rep.Store(r)
	select {
	case <-ctr.Done():
		// Exited before the replica was stored: OnExit could not stop it.
		r.Stop(ctx, 0)
	default:
	}
	return &containerFunction{ctr: ctr, rep: r}, startedAt, runtimeapi.Exit{}, false
}

var errExited = errors.New("the container exited")

// waitListening dials addr inside the container until it accepts, the
// container exits, or containerListenTimeout passes.
func waitListening(ctx context.Context, d runtimeapi.Dialer, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, containerListenTimeout)
	defer cancel()
	delay := listenPollMin
	for {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			_ = conn.Close()
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-d.Done():
			t.Stop()
			return errExited
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("not within %s (last: %v)", containerListenTimeout, err)
		case <-t.C:
		}
		delay = min(2*delay, listenPollMax)
	}
}

// containerFunction is the instance of an HTTP container function: its
// container and the replica that forwards requests to it.
type containerFunction struct {
	ctr runtimeapi.Instance
	rep *funcserver.Replica
}

func (c *containerFunction) ID() string            { return c.ctr.ID() }
func (c *containerFunction) Done() <-chan struct{} { return c.ctr.Done() }
func (c *containerFunction) Exit() runtimeapi.Exit { return c.ctr.Exit() }

var _ runtimeapi.Readopted = (*containerFunction)(nil)

// Readopted implements runtimeapi.Readopted for its container.
func (c *containerFunction) Readopted() (int32, bool) {
	if a, ok := c.ctr.(runtimeapi.Readopted); ok {
		return a.Readopted()
	}
	return 0, false
}

// Stop lets the requests in flight finish (within grace), then stops the
// container with what is left of the grace.
func (c *containerFunction) Stop(ctx context.Context, grace time.Duration) runtimeapi.Exit {
	begun := time.Now()
	c.rep.Stop(ctx, grace)
	return c.ctr.Stop(ctx, max(0, grace-time.Since(begun)))
}

// portProxy is the runtimeapi.Function of an HTTP container: it forwards
// each request to the container's port over kept-alive connections made
// inside the container's network.
type portProxy struct {
	addr      string
	transport *http.Transport
}

func newPortProxy(d runtimeapi.Dialer, addr string, concurrency int) *portProxy {
	return &portProxy{addr: addr, transport: &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		},
		MaxIdleConnsPerHost: max(concurrency, 1),
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}}
}

// hopHeaders are meaningful for one connection only (RFC 9110, 7.6.1).
var hopHeaders = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// Serve implements runtimeapi.Function.
func (p *portProxy) Serve(ctx context.Context, w http.ResponseWriter, req *runtimeapi.FunctionRequest) runtimeapi.FunctionResult {
	if req.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, req.Timeout)
		defer cancel()
	}
	in := req.HTTP
	target := url.URL{Scheme: "http", Host: p.addr, Path: in.URL.Path, RawPath: in.URL.RawPath, RawQuery: in.URL.RawQuery}
	body := &recordedBody{r: req.Body}
	out, err := http.NewRequestWithContext(ctx, in.Method, target.String(), body)
	if err != nil {
		http.Error(w, "400 bad request: "+err.Error(), http.StatusBadRequest)
		return runtimeapi.FunctionResult{Status: http.StatusBadRequest, Outcome: runtimeapi.OutcomeError, Message: err.Error()}
	}
	if req.Body == nil {
		out.Body, out.ContentLength = http.NoBody, 0
	} else {
		out.ContentLength = in.ContentLength
	}
	out.Header = in.Header.Clone()
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	out.Host = in.Host
	if out.Header.Get("X-Forwarded-For") == "" && req.RemoteAddr != "" {
		// Served in-process, the request has not been through a proxy yet.
		host, _, err := net.SplitHostPort(req.RemoteAddr)
		if err != nil {
			host = req.RemoteAddr
		}
		out.Header.Set("X-Forwarded-For", host)
	}
	resp, err := p.transport.RoundTrip(out)
	if err != nil {
		return p.failed(ctx, w, body, err)
	}
	defer resp.Body.Close()
	for _, h := range hopHeaders {
		resp.Header.Del(h)
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	if err := copyFlushing(w, resp.Body); err != nil {
		outcome := runtimeapi.OutcomeError
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			outcome = runtimeapi.OutcomeTimeout
		}
		return runtimeapi.FunctionResult{Status: resp.StatusCode, Outcome: outcome, Message: err.Error(), Truncated: true}
	}
	return runtimeapi.FunctionResult{Status: resp.StatusCode, Outcome: runtimeapi.OutcomeOK}
}

// failed answers a request the container never answered.
func (p *portProxy) failed(ctx context.Context, w http.ResponseWriter, body *recordedBody, err error) runtimeapi.FunctionResult {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(body.err, &mbe):
		msg := fmt.Sprintf("the body is over the function's limit of %d bytes", mbe.Limit)
		http.Error(w, "413 request entity too large: "+msg, http.StatusRequestEntityTooLarge)
		return runtimeapi.FunctionResult{Status: http.StatusRequestEntityTooLarge, Outcome: runtimeapi.OutcomeTooLarge, Message: msg}
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		http.Error(w, "504 gateway timeout: the container did not answer within the function's timeout", http.StatusGatewayTimeout)
		return runtimeapi.FunctionResult{Status: http.StatusGatewayTimeout, Outcome: runtimeapi.OutcomeTimeout, Message: err.Error()}
	case ctx.Err() != nil:
		return runtimeapi.FunctionResult{Outcome: runtimeapi.OutcomeCanceled, Message: err.Error()}
	}
	msg := fmt.Sprintf("the container did not answer on %s: %v", p.addr, err)
	http.Error(w, "502 bad gateway: "+msg, http.StatusBadGateway)
	return runtimeapi.FunctionResult{Status: http.StatusBadGateway, Outcome: runtimeapi.OutcomeError, Message: msg}
}

// Close implements runtimeapi.Function.
func (p *portProxy) Close() { p.transport.CloseIdleConnections() }

// recordedBody keeps the error reading the request body hit, which the
// transport reports only as its own.
type recordedBody struct {
	r   io.Reader
	err error
}

func (b *recordedBody) Read(p []byte) (int, error) {
	if b.r == nil {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

// copyFlushing streams a response, flushing after every read so that a
// streamed answer reaches the client as it is produced.
func copyFlushing(w http.ResponseWriter, r io.Reader) error {
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			_ = rc.Flush()
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
