package funcserver

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// ProbeResult is how one health check of a replica went.
type ProbeResult struct {
	OK     bool
	Status int    // the HTTP status the function answered, 0 if none
	Detail string // "GET /greet/healthz: 500 Internal Server Error: boom"
	// Skipped says that the check did not run: the node's memory was in
	// use by requests for its whole timeout. The replica is busy, not
	// unhealthy: its health stands as it was.
	Skipped bool
}

// probeBodyExcerpt bounds how much of a failed check's body is kept.
const probeBodyExcerpt = 200

// Probe requests the replica's health path once (Settings.HealthPath), in
// a fresh sandbox like any request but outside the replica's admission: a
// saturated replica is busy, not unhealthy. Its sandbox holds memory from
// the node's budget as a request's does; when none is free within the
// timeout, the check is skipped. 2xx and 3xx pass. A stopping replica is
// never probed.
func (r *Replica) Probe(ctx context.Context, timeout time.Duration) ProbeResult {
	set := r.spec.Settings
	what := "GET " + set.HealthPath
	r.mu.Lock()
	if r.stopping {
		r.mu.Unlock()
		return ProbeResult{Detail: what + ": the replica is stopping"}
	}
	r.active++ // Stop waits for the check before it closes the Function
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.active--
		r.idleCheckLocked()
		r.mu.Unlock()
	}()

	ctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("no answer within %s", timeout))
	defer cancel()
	stop := context.AfterFunc(r.ctx, func() { cancel() })
	defer stop()
	if lim := r.srv.memory.Load(); lim != nil && r.spec.MemoryBytes > 0 {
		if err := lim.budget.Borrow(ctx, r.spec.MemoryBytes); err != nil {
			return ProbeResult{Skipped: true, Detail: what + ": not checked: the node's memory is in use: " + memoryShortage(lim.budget, r.spec.MemoryBytes)}
		}
		defer lim.budget.Return(r.spec.MemoryBytes)
	}
	host := set.Host
	if host == "" {
		host = "localhost"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+set.HealthPath, nil)
	if err != nil {
		return ProbeResult{Detail: what + ": " + err.Error()}
	}
	req.Header.Set("User-Agent", "wasmorch-health-check")
	req.RemoteAddr = "127.0.0.1:0"
	script, pathInfo := httptrigger.Split(set.Route, set.HealthPath)
	rec := &probeRecorder{h: http.Header{}}
	res := r.spec.Function.Serve(ctx, rec, &runtimeapi.FunctionRequest{
		HTTP:       req,
		Body:       http.NoBody,
		ScriptName: script,
		PathInfo:   pathInfo,
		RemoteAddr: "127.0.0.1",
		Timeout:    timeout,
		Logs:       r.spec.Logs,
	})
	status := rec.code
	if status == 0 {
		status = res.Status
	}
	if res.Outcome == runtimeapi.OutcomeOK && status >= 200 && status < 400 {
		return ProbeResult{OK: true, Status: status, Detail: fmt.Sprintf("%s: %d %s", what, status, http.StatusText(status))}
	}
	detail := what + ": "
	switch {
	case status != 0:
		detail += fmt.Sprintf("%d %s", status, http.StatusText(status))
		if body := firstLine(rec.body.String()); body != "" {
			detail += ": " + body
		}
	case context.Cause(ctx) != nil && ctx.Err() != nil:
		detail += context.Cause(ctx).Error()
	default:
		detail += strings.ToLower(res.Outcome)
	}
	if res.Message != "" && res.Outcome != runtimeapi.OutcomeOK {
		detail += " (" + firstLine(res.Message) + ")"
	}
	return ProbeResult{Status: status, Detail: detail}
}

// firstLine is the first non-empty line of s, trimmed.
func firstLine(s string) string {
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return ""
}

// probeRecorder keeps a health check's status and the start of its body.
type probeRecorder struct {
	h    http.Header
	code int
	body strings.Builder
}

func (p *probeRecorder) Header() http.Header { return p.h }

func (p *probeRecorder) WriteHeader(code int) {
	if p.code == 0 {
		p.code = code
	}
}

func (p *probeRecorder) Write(b []byte) (int, error) {
	if p.code == 0 {
		p.code = http.StatusOK
	}
	if room := probeBodyExcerpt - p.body.Len(); room > 0 {
		p.body.Write(b[:min(len(b), room)])
	}
	return len(b), nil
}

// Flush implements http.Flusher, which functions stream through.
func (p *probeRecorder) Flush() {}
