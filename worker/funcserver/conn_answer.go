package funcserver

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The answer side of ConnServer (conn.go): an http.ResponseWriter that
// holds a short answer to send it with its length and its head in one
// write, and streams a longer or flushed one chunked.

// response is the http.ResponseWriter of one request.
type response struct {
	c             *serverConn
	req           *http.Request
	body          *requestBody // nil: no body
	header        http.Header
	status        int   // 0 until WriteHeader
	contentLength int64 // from the handler's Content-Length, -1: none
	written       int64 // body bytes the handler wrote
	held          []byte
	headSent      bool
	chunked       bool
	noBody        bool // HEAD, or a status without a body
	closeAfter    bool
	done          bool // the handler returned
}

var _ http.Flusher = (*response)(nil)

func (w *response) Header() http.Header { return w.header }

func (w *response) WriteHeader(code int) {
	if w.status != 0 {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		// An informational answer goes out at once; the final one follows.
		if !w.headSent {
			w.writeStatusLine(code)
			w.writeHeaderFields(w.header)
			_, _ = w.c.bw.WriteString("\r\n")
			_ = w.c.bw.Flush()
		}
		return
	}
	w.status = code
	if cl := w.header.Get("Content-Length"); cl != "" {
		if v, err := strconv.ParseInt(cl, 10, 64); err == nil && v >= 0 {
			w.contentLength = v
		} else {
			w.c.s.log().Debug("function server: invalid Content-Length in an answer", "value", cl)
			w.header.Del("Content-Length")
		}
	}
	w.noBody = w.req.Method == http.MethodHead || !bodyAllowedForStatus(code)
}

func (w *response) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.noBody {
		if w.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.contentLength >= 0 && w.written+int64(len(p)) > w.contentLength {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.headSent {
		if len(w.held)+len(p) <= bufferBeforeChunking {
			w.held = append(w.held, p...)
			return len(p), nil
		}
		w.sendHead()
	}
	return w.writeBody(p)
}

// Flush sends the head and what was written so far.
func (w *response) Flush() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		w.sendHead()
	}
	_ = w.c.bw.Flush()
}

// finish completes the answer once the handler returned.
func (w *response) finish() {
	w.done = true
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !w.headSent {
		w.sendHead()
	}
	if w.chunked {
		_, _ = w.c.bw.WriteString("0\r\n\r\n")
	}
	if w.contentLength >= 0 && w.written != w.contentLength && !w.noBody {
		// Short of its Content-Length: the gateway must see it cut.
		w.closeAfter = true
	}
	_ = w.c.bw.Flush()
}

func (w *response) writeBody(p []byte) (int, error) {
	if w.chunked {
		w.c.bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		w.c.bw.WriteString("\r\n")
		n, err := w.c.bw.Write(p)
		w.c.bw.WriteString("\r\n")
		return n, err
	}
	return w.c.bw.Write(p)
}

// sendHead writes the answer's head (to bw), then what was held of its
// body.
func (w *response) sendHead() {
	w.headSent = true
	h := w.header
	// The request's body: what the handler left unread is dropped (up to
	// a bound) to keep the connection, as net/http does.
	if b := w.body; b != nil && !b.eof && !w.closeAfter {
		if b.err != nil || b.expect {
			w.closeAfter = true
		} else if _, err := io.CopyN(io.Discard, b, maxPostHandlerRead+1); err != io.EOF {
			w.closeAfter = true
		}
	}
	if w.req.ProtoMajor == 1 && w.req.ProtoMinor == 0 {
		// HTTP/1.0: kept only if asked for and the length is known.
		w.closeAfter = w.closeAfter || !strings.EqualFold(w.req.Header.Get("Connection"), "keep-alive")
	}
	if strings.EqualFold(h.Get("Connection"), "close") {
		w.closeAfter = true
	}
	if w.noBody {
		if w.req.Method != http.MethodHead {
			h.Del("Content-Length")
			h.Del("Transfer-Encoding")
		}
	} else {
		if w.contentLength < 0 && w.done {
			w.contentLength = int64(len(w.held))
			h["Content-Length"] = []string{string(strconv.AppendInt(w.c.clenBuf[:0], w.contentLength, 10))}
		}
		if _, ok := h["Content-Type"]; !ok && len(w.held) > 0 && h.Get("Content-Encoding") == "" {
			h["Content-Type"] = []string{http.DetectContentType(w.held)}
		}
		h.Del("Transfer-Encoding")
		switch {
		case w.contentLength >= 0:
		case w.req.ProtoAtLeast(1, 1):
			w.chunked = true
		default:
			w.closeAfter = true // the end of the body is the connection's
		}
	}
	if w.closeAfter {
		h.Del("Connection")
		h["Connection"] = []string{"close"}
	} else if w.req.ProtoMinor == 0 && w.req.ProtoMajor == 1 {
		h["Connection"] = []string{"keep-alive"}
	}
	if _, ok := h["Date"]; !ok {
		h["Date"] = []string{string(time.Now().UTC().AppendFormat(w.c.dateBuf[:0], http.TimeFormat))}
	}
	w.writeStatusLine(w.status)
	w.writeHeaderFields(h)
	if w.chunked {
		_, _ = w.c.bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	_, _ = w.c.bw.WriteString("\r\n")
	if len(w.held) > 0 && !w.noBody {
		_, _ = w.writeBody(w.held)
	}
	w.held = nil
}

func (w *response) writeStatusLine(code int) {
	bw := w.c.bw
	_, _ = bw.WriteString("HTTP/1.1 ")
	_, _ = bw.Write(strconv.AppendInt(w.c.clenBuf[:0], int64(code), 10))
	_ = bw.WriteByte(' ')
	_, _ = bw.WriteString(http.StatusText(code))
	_, _ = bw.WriteString("\r\n")
}

// writeHeaderFields writes h's valid fields, a value's line breaks turned
// into spaces (as net/http's Header.Write does).
func (w *response) writeHeaderFields(h http.Header) {
	bw := w.c.bw
	for k, vs := range h {
		if !validFieldName(k) {
			continue
		}
		for _, v := range vs {
			_, _ = bw.WriteString(k)
			_, _ = bw.WriteString(": ")
			if strings.ContainsAny(v, "\r\n") {
				v = headerNewlines.Replace(v)
			}
			_, _ = bw.WriteString(strings.TrimSpace(v))
			_, _ = bw.WriteString("\r\n")
		}
	}
}

// validFieldName reports whether k is a token (RFC 9110 5.1).
func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

var headerNewlines = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ")

// bodyAllowedForStatus reports whether a status may have a body (RFC
// 9110 6.4.1).
func bodyAllowedForStatus(code int) bool {
	switch {
	case code >= 100 && code <= 199:
		return false
	case code == http.StatusNoContent, code == http.StatusNotModified:
		return false
	}
	return true
}
