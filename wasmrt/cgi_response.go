package wasmrt

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxCGIHeaderBytes bounds the header block a function may print before
// the blank line; more is malformed output, not a response.
const maxCGIHeaderBytes = 64 << 10

// flushDelay is how long output may wait in the response buffer while
// the guest keeps running; a guest that pauses (sleeps) or ends is
// flushed at once. A response written in one go thus leaves as one
// write with a Content-Length, and a streaming one still streams.
const flushDelay = time.Millisecond

// cgiWriter is a function's stdout: it holds the output until the blank
// line that ends the CGI headers, sends the headers, then passes the body
// through to the client, flushing what the guest wrote when it pauses and
// at most flushDelay after it wrote it, so that the client sees output as
// the guest produces it. It is used by one guest, and by its flush timer.
type cgiWriter struct {
	w       http.ResponseWriter
	flusher http.Flusher // nil if w cannot flush

	mu      sync.Mutex
	head    []byte // output before the headers were complete
	sent    bool   // the headers are sent; later output is body
	status  int    // the status sent
	bad     error  // the output is not CGI; the rest is discarded
	refused bool   // the request failed (its body): output before the headers is discarded
	pending bool   // written but not flushed
	timer   *time.Timer
	armed   bool
	ended   bool // the call is over: the server completes the response
}

// pause flushes what is pending; the guest is about to wait.
func (c *cgiWriter) pause() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.flushLocked()
}

func (c *cgiWriter) flushLocked() {
	if c.pending && !c.ended && c.flusher != nil {
		c.flusher.Flush()
	}
	c.pending = false
}

// pendingLocked notes unflushed output and arms the flush timer.
func (c *cgiWriter) pendingLocked() {
	c.pending = true
	if c.flusher == nil || c.armed {
		return
	}
	c.armed = true
	if c.timer == nil {
		c.timer = time.AfterFunc(flushDelay, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.armed = false
			c.flushLocked()
		})
	} else {
		c.timer.Reset(flushDelay)
	}
}

// end stops flushing: the call is over and the server finishes the
// response (with a Content-Length, if it was never flushed).
func (c *cgiWriter) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ended = true
	if c.timer != nil {
		c.timer.Stop()
	}
}

// refuse discards what the guest prints from now on, unless its headers
// are sent already: the call answers for a request that failed.
func (c *cgiWriter) refuse() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refused = true
}

func (c *cgiWriter) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.bad != nil || c.ended || c.refused && !c.sent:
		return len(p), nil
	case c.sent:
		n, err := c.w.Write(p)
		if err == nil {
			c.pendingLocked()
		}
		return n, err
	}
	// Only the header block is held, never more than its limit (and the
	// blank line after it): a body written in the same call goes from the
	// guest's memory to the client without a copy on the worker's heap.
	took := min(len(p), max(0, maxCGIHeaderBytes+2-len(c.head)))
	c.head = append(c.head, p[:took]...)
	end, bodyAt := headerEnd(c.head)
	if end < 0 {
		if len(c.head) > maxCGIHeaderBytes {
			c.bad = fmt.Errorf("no blank line within the first %d bytes of output (the limit of the CGI headers)", maxCGIHeaderBytes)
		}
		return len(p), nil
	}
	header, status, err := parseCGIHeaders(c.head[:end])
	if err != nil {
		c.bad = err
		return len(p), nil
	}
	dst := c.w.Header()
	for k, vs := range header {
		dst[k] = vs
	}
	c.w.WriteHeader(status)
	c.sent, c.status = true, status
	body, rest := c.head[bodyAt:], p[took:]
	c.head = nil
	for _, b := range [][]byte{body, rest} {
		if len(b) > 0 {
			if _, err := c.w.Write(b); err != nil {
				return len(p), err
			}
		}
	}
	c.pendingLocked()
	return len(p), nil
}

// headerEnd finds the blank line that ends a CGI header block, with lines
// ended by LF or CRLF: end is where the header lines stop, bodyAt where the
// body starts; -1, -1 if the block is not complete yet.
func headerEnd(b []byte) (end, bodyAt int) {
	if bytes.HasPrefix(b, []byte("\n")) {
		return 0, 1
	}
	if bytes.HasPrefix(b, []byte("\r\n")) {
		return 0, 2
	}
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1, -1
		}
		next := i + j + 1
		switch {
		case bytes.HasPrefix(b[next:], []byte("\n")):
			return next, next + 1
		case bytes.HasPrefix(b[next:], []byte("\r\n")):
			return next, next + 2
		}
		i = next
	}
}

// parseCGIHeaders parses the header lines of a CGI response (RFC 3875
// section 6): "Name: value" lines; Status sets the status ("201" or "201
// Created"), a final one (200-599): the server answers for the connection,
// so informational answers and switching protocols are not the
// function's; Location without Status is a redirect (302). Content-Length
// is dropped: the body is what the guest writes, framed by the server
// (with its length when it is written at once, in chunks when it
// streams), so that a length the body contradicts can neither cut it nor
// leave the client waiting. Every other header is passed through (the
// function server drops those that describe one connection). At least one
// header is required.
func parseCGIHeaders(block []byte) (http.Header, int, error) {
	h := http.Header{}
	status := 0
	rest := strings.TrimSuffix(string(block), "\n")
	if strings.TrimSuffix(rest, "\r") == "" && !strings.Contains(rest, "\n") {
		return nil, 0, fmt.Errorf("no CGI headers before the blank line (print at least Content-Type)")
	}
	for more := true; more; {
		var line string
		line, rest, more = strings.Cut(rest, "\n")
		line = strings.TrimSuffix(line, "\r")
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, 0, fmt.Errorf("header line %q is not \"Name: value\"", clip(line))
		}
		if !validHeaderName(name) {
			return nil, 0, fmt.Errorf("header line %q has an invalid name", clip(line))
		}
		value = strings.Trim(value, " \t")
		if strings.ContainsAny(value, "\x00\r") {
			return nil, 0, fmt.Errorf("header %s has a control character in its value", name)
		}
		switch key := http.CanonicalHeaderKey(name); key {
		case "Status":
			code, _, _ := strings.Cut(value, " ")
			n, err := strconv.Atoi(code)
			if err != nil || n < 100 || n > 599 || len(code) != 3 {
				return nil, 0, fmt.Errorf("the Status header %q is not a 3-digit HTTP status", clip(value))
			}
			if n < 200 {
				return nil, 0, fmt.Errorf("the Status header %q is not a final HTTP status (200-599)", clip(value))
			}
			if status != 0 {
				return nil, 0, errors.New("the Status header is given twice")
			}
			status = n
		case "Content-Length":
		default:
			h[key] = append(h[key], value)
		}
	}
	if status == 0 {
		status = http.StatusOK
		if h.Get("Location") != "" {
			status = http.StatusFound
		}
	}
	return h, status, nil
}

// validHeaderName reports whether s is an HTTP token (RFC 9110 5.1).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// clip shortens what is quoted from a guest's output in an error.
func clip(s string) string {
	const n = 80
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
