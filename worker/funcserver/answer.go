package funcserver

import (
	"bytes"
	"fmt"
	"net/http"
	"net/textproto"
	"strings"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// A call's answer goes through a callWriter, which keeps apart what is
// the function's and what is the worker's:
//
//   - headers of the function that describe one connection (hop-by-hop,
//     RFC 9110 7.6.1) or that belong to the gateway's protocol with its
//     workers (X-Wasmorch-*) are dropped: a function cannot make the
//     gateway retry it, nor speak for the connection to the client;
//   - an error answer (status 400 and up) is held until the call ends, or
//     the function flushes it or has written more than holdLimit of it.
//     If the call then failed (a FunctionResult that is not OK and not
//     Truncated), that answer was the runtime's own, its body the detail of
//     the failure: it is replaced by the worker's failure answer (fail),
//     which carries the detail to the gateway in HeaderFailure and not in
//     its body. A function's own error answers pass as they are.
//
// The gateway keeps HeaderFailure from the client: the detail goes to its
// log and the workload's events.

// holdLimit bounds how much of an error answer is held: a runtime's own
// failure answers are one short line.
const holdLimit = 4 << 10

// hopHeader reports whether a (canonical) header name is meaningful for
// one connection only (RFC 9110 7.6.1).
func hopHeader(name string) bool {
	switch name {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// dropForeignHeaders removes from a function's answer the headers that
// are not its to send: hop-by-hop ones, those its Connection header names,
// and the gateway protocol's.
func dropForeignHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for _, name := range strings.Split(v, ",") {
			if name = textproto.TrimString(name); name != "" {
				h.Del(name)
			}
		}
	}
	for name := range h {
		if hopHeader(name) || strings.HasPrefix(name, "X-Wasmorch-") {
			delete(h, name)
		}
	}
}

// callWriter is the http.ResponseWriter a Function answers through.
type callWriter struct {
	w     http.ResponseWriter
	h     http.Header
	code  int          // the status the function set, 0 until then
	held  bool         // an error answer is held
	body  bytes.Buffer // the held answer's body
	wrote bool         // the answer went to w
}

func newCallWriter(w http.ResponseWriter) *callWriter {
	return &callWriter{w: w, h: http.Header{}}
}

func (c *callWriter) Header() http.Header { return c.h }

func (c *callWriter) WriteHeader(code int) {
	if c.code != 0 {
		return
	}
	c.code = code
	dropForeignHeaders(c.h)
	if code >= 400 {
		c.held = true
		return
	}
	c.send()
}

func (c *callWriter) Write(p []byte) (int, error) {
	if c.code == 0 {
		c.WriteHeader(http.StatusOK)
	}
	if c.held {
		c.body.Write(p)
		if c.body.Len() > holdLimit {
			return len(p), c.release()
		}
		return len(p), nil
	}
	return c.w.Write(p)
}

// Flush implements http.Flusher: a function that flushes streams its
// answer, whatever its status.
func (c *callWriter) Flush() {
	if c.code == 0 {
		c.WriteHeader(http.StatusOK)
	}
	if c.held {
		_ = c.release()
	}
	if f, ok := c.w.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the server's writer.
func (c *callWriter) Unwrap() http.ResponseWriter { return c.w }

// send passes the headers and the status on.
func (c *callWriter) send() {
	dst := c.w.Header()
	for k, v := range c.h {
		dst[k] = v
	}
	c.w.WriteHeader(c.code)
	c.wrote = true
}

// release passes a held answer on: it is the function's.
func (c *callWriter) release() error {
	c.held = false
	c.send()
	_, err := c.w.Write(c.body.Bytes())
	c.body.Reset()
	return err
}

// finish completes the answer once the call has returned res.
func (c *callWriter) finish(res runtimeapi.FunctionResult) {
	failed := res.Outcome != runtimeapi.OutcomeOK && res.Outcome != runtimeapi.OutcomeCanceled && !res.Truncated
	switch {
	case c.code == 0 && failed && res.Status != 0:
		// A runtime that left the answer to the server.
		fail(c.w, res.Status, res.Outcome, res.Message)
		c.wrote = true
	case !c.held:
	case failed:
		// The runtime answered for a call that failed.
		c.held = false
		status := res.Status
		if status == 0 {
			status = c.code
		}
		fail(c.w, status, res.Outcome, res.Message)
		c.wrote = true
	default:
		_ = c.release()
	}
}

// Outcomes of the worker's own answers, beside runtimeapi's.
const (
	outcomeNoReplica = "NoReplica" // no such replica here (503)
	outcomeSaturated = "Saturated" // the replica's slots and queue are full (503)
	outcomeStopped   = "Stopped"   // the replica stopped under the call, which had not answered (503)
)

// fail answers a request that no function answered: the status, a plain
// body without the detail, and the outcome and the detail in
// HeaderFailure, for the gateway's log and events.
func fail(w http.ResponseWriter, status int, outcome, detail string) {
	h := w.Header()
	h.Set(httptrigger.HeaderFailure, httptrigger.FormatFailure(outcome, detail))
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, "%d %s\n", status, http.StatusText(status))
}
