package gateway

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// The gateway's clients may be anyone: what went wrong inside a function
// is its owner's business. Every request gets an id (HeaderRequestID, on
// the request the function sees and on the response); an error answer
// gives its status and a short sentence with that id, and the detail —
// the worker's HeaderFailure, or the gateway's own error — goes to the
// member's log under that id and, for the function's own failures, to an
// event on its workload (FunctionFailed), at most one per eventInterval per
// workload and member, each counting the failures since the previous one.

// HeaderRequestID carries the gateway's id of a request.
const HeaderRequestID = "X-Request-Id"

// eventInterval is how often at most one member records a FunctionFailed
// event for one workload: a function failing every request cannot fill
// etcd with events; the log keeps every failure.
const eventInterval = 10 * time.Second

// outcomeUnreachable is the gateway's own outcome for a worker that did
// not answer (the connection failed); outcomeNoAnswer for one that did
// not answer within the function's timeout.
const (
	outcomeUnreachable = "Unreachable"
	outcomeNoAnswer    = "NoAnswer"
)

// newRequestID is 64 random bits in hex (math/rand/v2's generator is
// seeded from the system's: ids cannot be guessed from earlier ones).
func newRequestID() string {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], rand.Uint64())
	return hex.EncodeToString(b[:])
}

// publicReason is all a client is told of why its request failed.
func publicReason(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "the request could not be read"
	case http.StatusNotFound:
		return "no function is routed here"
	case http.StatusRequestEntityTooLarge:
		return "the request body is over the function's limit"
	case http.StatusInternalServerError:
		return "the function failed"
	case http.StatusBadGateway:
		return "the function gave no valid answer"
	case http.StatusServiceUnavailable:
		return "the function is not available; retry shortly"
	case http.StatusGatewayTimeout:
		return "the function did not answer in time"
	}
	return "the request failed"
}

// publicBody is an error answer's body: the status, the reason and the
// request id.
func publicBody(status int, id string) string {
	return fmt.Sprintf("%d %s: %s (request id %s)\n", status, strings.ToLower(http.StatusText(status)), publicReason(status), id)
}

// refuse answers status with the public body.
func refuse(w http.ResponseWriter, id string, status int) {
	h := w.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set(HeaderRequestID, id)
	if status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	_, _ = io.WriteString(w, publicBody(status, id))
}

// functionFailure says whether an outcome is the function failing (worth
// an event): not the client's request, nor a busy or missing replica.
func functionFailure(outcome string) bool {
	switch outcome {
	case runtimeapi.OutcomeTrap, runtimeapi.OutcomeMalformed, runtimeapi.OutcomeError, runtimeapi.OutcomeTimeout, outcomeUnreachable, outcomeNoAnswer:
		return true
	}
	return false
}

// failed notes a request no function answered: in the log under its id,
// and as a rate-limited event when the function failed.
func (g *Gateway) failed(req *http.Request, c *call, status int, outcome, detail string) {
	workload := ""
	if c != nil {
		workload = c.route.workload
	}
	id := req.Header.Get(HeaderRequestID)
	if c != nil {
		id = c.id
	}
	level := slog.LevelDebug
	if functionFailure(outcome) {
		level = slog.LevelWarn
	}
	g.log.Log(req.Context(), level, "gateway: function call failed", "request", id, "workload", workload,
		"method", req.Method, "path", req.URL.Path, "status", status, "outcome", outcome, "detail", detail)
	if workload == "" || !functionFailure(outcome) || g.record == nil {
		return
	}
	record, since := g.failures.admit(workload, time.Now())
	if !record {
		return
	}
	msg := fmt.Sprintf("%s %s: %d %s: %s (request %s)", req.Method, req.URL.Path, status, outcome, detail, id)
	if since > 0 {
		msg += fmt.Sprintf("; %d more failure(s) since the previous event", since)
	}
	g.recordInBackground("workload/"+workload, "FunctionFailed", msg)
}

// recordInBackground records an event without holding the request.
func (g *Gateway) recordInBackground(object, reason, msg string) {
	base := context.Background()
	if p := g.runCtx.Load(); p != nil {
		base = *p
	}
	if base.Err() != nil {
		return
	}
	g.bg.Add(1)
	go func() {
		defer g.bg.Done()
		ctx, cancel := context.WithTimeout(base, 5*time.Second)
		defer cancel()
		g.record(ctx, object, reason, msg)
	}()
}

// failureEvents admits at most one event per workload per eventInterval.
type failureEvents struct {
	mu sync.Mutex
	by map[string]*failureCount
}

type failureCount struct {
	last  time.Time // of the last event recorded
	since int       // failures not recorded since
}

// maxTracked bounds the workloads failureEvents remembers; past it, those
// without a failure for an interval are forgotten.
const maxTracked = 4096

// admit says whether a failure of workload at now is recorded as an event,
// and how many failures were not since the previous one.
func (f *failureEvents) admit(workload string, now time.Time) (bool, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.by == nil {
		f.by = map[string]*failureCount{}
	}
	c := f.by[workload]
	if c == nil {
		if len(f.by) >= maxTracked {
			for name, o := range f.by {
				if now.Sub(o.last) >= eventInterval {
					delete(f.by, name)
				}
			}
		}
		c = &failureCount{}
		f.by[workload] = c
	} else if now.Sub(c.last) < eventInterval {
		c.since++
		return false, 0
	}
	since := c.since
	c.last, c.since = now, 0
	return true, since
}

// failureAnswer turns a worker's failure answer (HeaderFailure) into the
// public one, in place: the status (400 when the client's body could not
// be read), the public body and the request id; it notes the failure.
func (g *Gateway) failureAnswer(resp *http.Response, c *call) {
	outcome, detail := httptrigger.ParseFailure(resp.Header.Get(httptrigger.HeaderFailure))
	status := resp.StatusCode
	if c.body.broken() && status >= 500 {
		status, outcome = http.StatusBadRequest, runtimeapi.OutcomeBadBody
	}
	g.failed(resp.Request, c, status, outcome, detail)
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	_ = resp.Body.Close()
	body := publicBody(status, c.id)
	retry := resp.Header.Get("Retry-After")
	resp.Header = http.Header{
		"Content-Type":           {"text/plain; charset=utf-8"},
		"X-Content-Type-Options": {"nosniff"},
		"Content-Length":         {strconv.Itoa(len(body))},
	}
	if retry != "" {
		resp.Header.Set("Retry-After", retry)
	}
	resp.StatusCode, resp.Status = status, fmt.Sprintf("%d %s", status, http.StatusText(status))
	resp.ContentLength = int64(len(body))
	resp.TransferEncoding = nil
	resp.Trailer = nil
	resp.Body = io.NopCloser(strings.NewReader(body))
}

// dropProtocolHeaders removes the gateway protocol's headers (X-Wasmorch-*)
// and a request id from a worker's answer: the request id is the
// gateway's.
func dropProtocolHeaders(h http.Header) {
	for name := range h {
		if strings.HasPrefix(name, "X-Wasmorch-") || name == HeaderRequestID {
			delete(h, name)
		}
	}
}

// clientBody remembers that reading the client's request body failed
// (malformed chunks, a client that stopped sending): not over the limit,
// which is a 413.
type clientBody struct {
	io.ReadCloser
	mu  sync.Mutex
	err error
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var mbe *http.MaxBytesError
	if err != nil && err != io.EOF && !errors.As(err, &mbe) {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
	return n, err
}

// broken says whether the body could not be read; false for none.
func (b *clientBody) broken() bool {
	if b == nil {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err != nil
}
