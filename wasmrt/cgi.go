package wasmrt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// This file is the CGI-over-WASI call path (as WAGI defined it): one
// compiled module per revision, a fresh instance per request, the request
// in the environment and on stdin, the response parsed from stdout.

var _ runtimeapi.FunctionRuntime = (*Runtime)(nil)

// function is a prepared revision of an HTTP function. It holds its
// compiled module (as one of its users) until Close.
type function struct {
	r   *Runtime
	m   *module
	env []string // the workload's K=V
	// cfg is what every request's instance is configured with before its
	// own stdio and sleep: its arguments, and the function's files
	// preopened, if it has any.
	cfg wazero.ModuleConfig
	// files and scratch: a function with scratch space (state) gets a
	// new /tmp per request (scratchConfig), and its files with it.
	files   map[string][]byte
	scratch runtimeapi.Mount
	once    chan struct{}
	// alloc lends the instances their memory: the module's memory image
	// (memimage.go), which its instances must start from, if it has one;
	// else pooled memories (memory.go) if its initial memory is small
	// enough; nil: wazero allocates.
	alloc experimental.MemoryAllocator
}

// PrepareFunction implements runtimeapi.FunctionRuntime: it compiles the
// module for the memory limit unless already done, and keeps it until the
// Function is closed.
func (r *Runtime) PrepareFunction(ctx context.Context, a runtimeapi.Artifact, spec runtimeapi.FunctionSpec) (runtimeapi.Function, error) {
	return r.prepareFunction(ctx, a, spec, true)
}

// prepareFunction is PrepareFunction; without imaged, the instances apply
// the module's data segments themselves (to compare, in benchmarks).
func (r *Runtime) prepareFunction(ctx context.Context, a runtimeapi.Artifact, spec runtimeapi.FunctionSpec, imaged bool) (runtimeapi.Function, error) {
	for _, kv := range spec.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.IndexByte(kv, 0) >= 0 {
			return nil, startError(true, fmt.Sprintf("environment entry %q is not KEY=VALUE", kv))
		}
	}
	m, err := r.acquire(ctx, a, spec.MemoryBytes, true, imaged)
	if err != nil {
		return nil, err
	}
	f := &function{r: r, m: m, env: spec.Env, once: make(chan struct{}, 1)}
	f.cfg = r.moduleConfig.WithArgs("function")
	if len(spec.Files) > 0 {
		f.cfg = f.cfg.WithFSConfig(filesConfig(spec.Files))
	}
	if spec.ScratchBytes > 0 {
		if !filepath.IsAbs(spec.ScratchDir) {
			r.drop(m)
			return nil, startError(true, fmt.Sprintf("scratch space: directory %q is not an absolute path", spec.ScratchDir))
		}
		f.files, f.scratch = spec.Files, runtimeapi.Mount{GuestPath: "/tmp", HostPath: spec.ScratchDir, LimitBytes: spec.ScratchBytes}
	}
	switch pages := minMemoryPages(m.code); {
	case m.image != nil:
		f.alloc = m.image
	case pages > 0 && uint64(pages)*pageSize <= maxPooledMemory:
		f.alloc = &r.memory
	}
	return f, nil
}

// Close implements runtimeapi.Function; calls after the first do nothing.
func (f *function) Close() {
	select {
	case f.once <- struct{}{}:
		f.r.drop(f.m)
	default:
	}
}

// Serve implements runtimeapi.Function: it instantiates the module afresh,
// runs _start with the request as CGI variables and stdin, and streams the
// CGI response from stdout to w, flushing after every write.
func (f *function) Serve(ctx context.Context, w http.ResponseWriter, req *runtimeapi.FunctionRequest) runtimeapi.FunctionResult {
	r := f.r
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return failCall(w, req, http.StatusServiceUnavailable, runtimeapi.OutcomeError, "the wasm runtime is closed")
	}
	r.running.Add(1) // under mu, so that Close cannot be waiting already
	r.mu.Unlock()
	defer r.running.Done()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(r.base, func() { cancel(errRuntimeClosed) })
	defer stop()
	if req.Timeout > 0 {
		var cancelTimeout context.CancelFunc
		ctx, cancelTimeout = context.WithTimeoutCause(ctx, req.Timeout, errCallTimeout)
		defer cancelTimeout()
	}

	out := &cgiWriter{w: w}
	out.flusher, _ = w.(http.Flusher)
	body := &bodyReader{r: req.Body, out: out}
	logs := req.Logs
	if logs == nil {
		logs = io.Discard
	}
	sleep := ctxSleep(ctx, out.pause)
	cfg := f.cfg.
		WithStdin(body).
		WithStdout(out).
		WithStderr(logs).
		WithNanosleep(sleep)
	if f.scratch.LimitBytes > 0 {
		fsc, st, done, err := f.scratchConfig()
		if err != nil {
			return failCall(w, req, http.StatusInternalServerError, runtimeapi.OutcomeError, "scratch space: "+firstLine(err))
		}
		defer done()
		cfg, ctx = cfg.WithFSConfig(fsc), withFSState(ctx, st)
	}

	mod, err := f.m.wz.InstantiateModule(experimental.WithMemoryAllocator(ctx, f.alloc), f.m.code, cfg)
	if err == nil {
		guestProcs.enter()
		_, err = mod.ExportedFunction("_start").Call(withGuest(ctx, cgiEnv(req, f.env), sleep))
		guestProcs.leave()
		_ = mod.Close(context.WithoutCancel(ctx))
	} else if !isExit(err) {
		return failCall(w, req, http.StatusInternalServerError, runtimeapi.OutcomeError, "instantiate: "+firstLine(err))
	}
	out.end()
	return finishCall(ctx, w, req, out, body, err)
}

// scratchConfig makes one request's scratch space (state): a new
// directory under the function's, preopened at /tmp within its size
// beside the function's files, and the func that removes it once the
// request is over. Each request has its own, as it has its own sandbox:
// nothing one request writes is seen by another.
func (f *function) scratchConfig() (wazero.FSConfig, *fsState, func(), error) {
	dir, err := os.MkdirTemp(f.scratch.HostPath, "req-")
	if err != nil {
		return nil, nil, nil, err
	}
	done := func() {
		if err := os.RemoveAll(dir); err != nil {
			f.r.log.Warn("removing a request's scratch space", "dir", dir, "err", err)
		}
	}
	m := f.scratch
	m.HostPath = dir
	st := &fsState{}
	fsc, err := fsConfig(f.files, []runtimeapi.Mount{m}, st)
	if err != nil {
		done()
		return nil, nil, nil, err
	}
	return fsc, st, done, nil
}

// errCallTimeout is the cause of a call's context when its timeout expires.
var errCallTimeout = errors.New("the function's request timeout expired")

func isExit(err error) bool {
	var exitErr *sys.ExitError
	return errors.As(err, &exitErr)
}

// finishCall decides the response from how the guest ended and what it
// wrote, and completes it. A request body that could not be read is the
// answer even when the client's context ended: net/http ends it when the
// client stops sending, and a client that only closed its sending half
// still reads.
func finishCall(ctx context.Context, w http.ResponseWriter, req *runtimeapi.FunctionRequest, out *cgiWriter, body *bodyReader, err error) runtimeapi.FunctionResult {
	outcome, status, msg := runtimeapi.OutcomeOK, 0, ""
	var exitErr *sys.ExitError
	switch {
	case body.tooLarge != nil:
		outcome, status, msg = runtimeapi.OutcomeTooLarge, http.StatusRequestEntityTooLarge,
			fmt.Sprintf("the request body is larger than the function's limit of %d bytes", body.tooLarge.Limit)
	case body.broken != nil:
		outcome, status, msg = runtimeapi.OutcomeBadBody, http.StatusBadRequest, "reading the request body: "+body.broken.Error()
	case out.bad != nil:
		outcome, status, msg = runtimeapi.OutcomeMalformed, http.StatusBadGateway, "malformed CGI output: "+out.bad.Error()
	case err != nil && ctx.Err() != nil:
		switch cause := context.Cause(ctx); {
		case errors.Is(cause, errCallTimeout):
			outcome, status, msg = runtimeapi.OutcomeTimeout, http.StatusGatewayTimeout,
				fmt.Sprintf("stopped at its timeout of %s", req.Timeout)
		case errors.Is(cause, errRuntimeClosed):
			outcome, status, msg = runtimeapi.OutcomeError, http.StatusServiceUnavailable, "stopped: the worker is shutting down"
		default:
			outcome, status, msg = runtimeapi.OutcomeCanceled, 499, "stopped: the client went away ("+cause.Error()+")"
		}
	case errors.As(err, &exitErr) && exitErr.ExitCode() != 0:
		outcome, status, msg = runtimeapi.OutcomeTrap, http.StatusInternalServerError, fmt.Sprintf("exited with code %d", int32(exitErr.ExitCode()))
	case err != nil && !isExit(err):
		outcome, status, msg = runtimeapi.OutcomeTrap, http.StatusInternalServerError, "trapped: "+trapMessage(err)
	case !out.sent:
		outcome, status = runtimeapi.OutcomeMalformed, http.StatusBadGateway
		switch _, _, perr := parseCGIHeaders(out.head); {
		case len(out.head) == 0:
			msg = "malformed CGI output: the function wrote nothing; it must print CGI headers, a blank line, then the body"
		case perr != nil:
			msg = "malformed CGI output: " + perr.Error()
		default:
			msg = "malformed CGI output: it ended before the blank line that ends the CGI headers"
		}
	}
	if outcome == runtimeapi.OutcomeOK {
		return runtimeapi.FunctionResult{Status: out.status, Outcome: outcome}
	}
	if out.sent {
		// The status is gone already: the response can only be cut short.
		note(req, out.status, msg+" (after the response headers were sent: response truncated)")
		return runtimeapi.FunctionResult{Status: out.status, Outcome: outcome, Message: msg, Truncated: true}
	}
	return failCall(w, req, status, outcome, msg)
}

// failCall answers with an error status and notes why in the logs.
func failCall(w http.ResponseWriter, req *runtimeapi.FunctionRequest, status int, outcome, msg string) runtimeapi.FunctionResult {
	note(req, status, msg)
	if status != 499 {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if status == http.StatusServiceUnavailable {
			w.Header().Set("Retry-After", "1")
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, "%d %s: %s\n", status, http.StatusText(status), msg)
	}
	return runtimeapi.FunctionResult{Status: status, Outcome: outcome, Message: msg}
}

// note writes one line about a failed call to the function's logs, with
// the gateway's request id if it gave one.
func note(req *runtimeapi.FunctionRequest, status int, msg string) {
	if req.Logs == nil {
		return
	}
	method, path, id := "", "", ""
	if req.HTTP != nil {
		method, path = req.HTTP.Method, req.HTTP.URL.RequestURI()
		if v := req.HTTP.Header.Get("X-Request-Id"); v != "" {
			id = " (request " + v + ")"
		}
	}
	fmt.Fprintf(req.Logs, "[wasmorch] %s %s: %d: %s%s\n", method, path, status, msg, id)
}

// ctxSleep is a nanosleep that a done ctx cuts short, ending the guest
// there as proc_exit does (see instance.sleep). pause runs before the
// guest waits.
func ctxSleep(ctx context.Context, pause func()) sys.Nanosleep {
	return func(ns int64) {
		pause()
		guestProcs.leave() // a sleeping guest needs no P
		defer guestProcs.enter()
		if ns > 0 {
			t := time.NewTimer(time.Duration(ns))
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		// Also after a sleep that ended: when both were ready, select
		// may have taken the timer although ctx had ended long before
		// (a loaded machine: the timeout passed while this goroutine
		// waited to run).
		if ctx.Err() != nil {
			panic(sys.NewExitError(sys.ExitCodeContextCanceled))
		}
	}
}

// bodyReader remembers that the body went over its limit, or could not be
// read (malformed chunks, a client that stopped sending), so that the call
// answers 413 or 400 rather than whatever the guest made of a failed read:
// from then on what the guest prints is not sent.
type bodyReader struct {
	r        io.Reader
	out      *cgiWriter
	tooLarge *http.MaxBytesError
	broken   error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	if b.r == nil {
		return 0, io.EOF
	}
	n, err := b.r.Read(p)
	var mbe *http.MaxBytesError
	switch {
	case err == nil || err == io.EOF:
	case errors.As(err, &mbe):
		b.tooLarge = mbe
		b.out.refuse()
	case b.broken == nil:
		b.broken = err
		b.out.refuse()
	}
	return n, err
}

// cgiEnv is a request's environment: the CGI/1.1 variables (RFC 3875) and
// WAGI's extras, then the workload's own variables that the request does
// not set.
func cgiEnv(req *runtimeapi.FunctionRequest, workloadEnv []string) []string {
	hr := req.HTTP
	host, port := hr.Host, ""
	if h, p, err := net.SplitHostPort(hr.Host); err == nil {
		host, port = h, p
	}
	if port == "" {
		port = "80"
		if hr.TLS != nil {
			port = "443"
		}
	}
	remote := req.RemoteAddr
	if h, _, err := net.SplitHostPort(remote); err == nil {
		remote = h
	}
	scheme := "http"
	if hr.TLS != nil {
		scheme = "https"
	}
	// Every variable is written into one string, then sliced out of it.
	var e envBuilder
	size := 512 + len(hr.Host) + 2*len(hr.URL.RawQuery) + 5*len(req.PathInfo) + 2*len(req.ScriptName)
	for name, values := range hr.Header {
		size += len("HTTP_=") + len(name)
		for _, v := range values {
			size += len(v) + len(", ")
		}
	}
	e.b.Grow(size)
	e.ends = make([]int, 0, 20+len(hr.Header))
	e.add("GATEWAY_INTERFACE=CGI/1.1")
	e.add("SERVER_SOFTWARE=wasmorch")
	e.add("SERVER_PROTOCOL=", hr.Proto)
	e.add("SERVER_NAME=", host)
	e.add("SERVER_PORT=", port)
	e.add("REQUEST_METHOD=", hr.Method)
	e.add("SCRIPT_NAME=", req.ScriptName)
	e.add("PATH_INFO=", req.PathInfo)
	e.add("PATH_TRANSLATED=", req.PathInfo)
	e.add("QUERY_STRING=", hr.URL.RawQuery)
	e.add("REMOTE_ADDR=", remote)
	e.add("REMOTE_HOST=", remote)
	e.add("X_MATCHED_ROUTE=", req.ScriptName)
	e.add("X_RAW_PATH_INFO=", req.PathInfo)
	e.add("X_FULL_URL=", scheme, "://", hr.Host, hr.URL.RequestURI())
	if ct := hr.Header.Get("Content-Type"); ct != "" {
		e.add("CONTENT_TYPE=", ct)
	}
	if hr.ContentLength >= 0 {
		e.b.WriteString("CONTENT_LENGTH=")
		var n [20]byte
		e.b.Write(strconv.AppendInt(n[:0], hr.ContentLength, 10))
		e.end()
	}
	if hr.Host != "" {
		e.add("HTTP_HOST=", hr.Host)
	}
	for name, values := range hr.Header {
		switch name {
		case "Content-Type", "Content-Length", "Host":
			continue // in their CGI variables
		case "Proxy":
			continue // httpoxy: HTTP_PROXY would configure the guest's proxy
		}
		e.header(name, values)
	}
	env := e.vars(len(workloadEnv))
	if len(workloadEnv) == 0 {
		return env
	}
	// The workload's variables that the request does not set: looked up
	// in a set of the request's names, or along them when there are few.
	request := env
	var set map[string]bool
	if len(workloadEnv) > 8 {
		set = make(map[string]bool, len(request))
		for _, kv := range request {
			k, _, _ := strings.Cut(kv, "=")
			set[k] = true
		}
	}
	for _, kv := range workloadEnv {
		k, _, _ := strings.Cut(kv, "=")
		if set != nil && set[k] || set == nil && hasVar(request, k) {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// envBuilder writes an environment's KEY=VALUE entries one after the
// other into one string.
type envBuilder struct {
	b    strings.Builder
	ends []int // where each entry ends
}

// add writes an entry made of parts.
func (e *envBuilder) add(parts ...string) {
	for _, p := range parts {
		e.b.WriteString(p)
	}
	e.end()
}

// end ends the entry being written.
func (e *envBuilder) end() { e.ends = append(e.ends, e.b.Len()) }

// header writes the CGI variable of a request header: HTTP_ and its name
// in upper case with '-' as '_', its values joined by ", ".
func (e *envBuilder) header(name string, values []string) {
	e.b.WriteString("HTTP_")
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '-':
			e.b.WriteByte('_')
		case c >= 'a' && c <= 'z':
			e.b.WriteByte(c - 'a' + 'A')
		default:
			e.b.WriteByte(c)
		}
	}
	e.b.WriteByte('=')
	for i, v := range values {
		if i > 0 {
			e.b.WriteString(", ")
		}
		e.b.WriteString(v)
	}
	e.end()
}

// vars returns the entries, with room for extra more.
func (e *envBuilder) vars(extra int) []string {
	all := e.b.String()
	env := make([]string, len(e.ends), len(e.ends)+extra)
	start := 0
	for i, end := range e.ends {
		env[i], start = all[start:end], end
	}
	return env
}

// hasVar reports whether env (KEY=VALUE entries) sets key.
func hasVar(env []string, key string) bool {
	for _, kv := range env {
		if len(kv) > len(key) && kv[len(key)] == '=' && kv[:len(key)] == key {
			return true
		}
	}
	return false
}
