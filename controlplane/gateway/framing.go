package gateway

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
)

// One reading of a request's length. A request that gives both
// Content-Length and Transfer-Encoding can be read two ways, and a proxy
// in front of the gateway that reads the other way than the gateway sends
// the rest of the body on as a request of its own: request smuggling (RFC
// 9112 6.1 and 11.2). net/http reads such a request by its
// Transfer-Encoding, drops the Content-Length before a handler could see
// it, and keeps the connection open. So the gateway's public port reads
// each request's head as net/http is about to (StrictListener), marks a
// request that gives both, or Transfer-Encoding in HTTP/1.0, and the
// handler (Strict) refuses it with 400 and closes the connection.
//
// To tell where one request ends and the next begins, the listener counts
// Content-Length bytes; it does not decode chunks: after a chunked request
// it stops looking, and Strict closes the connection once that request is
// answered, so that no request follows a chunked one on a connection.

// framingHeader marks a request head that gives its length twice; the
// listener removes it from any head a client sends.
const framingHeader = "X-Wasmorch-Framing"

// maxHeadBytes bounds how much of a head is held while it is read: more
// than net/http accepts (http.DefaultMaxHeaderBytes and its 4 KiB of
// slack), which refuses such a head itself and closes the connection.
const maxHeadBytes = http.DefaultMaxHeaderBytes + 8<<10

// StrictListener wraps the public port's listener for Strict.
func StrictListener(l net.Listener) net.Listener { return strictListener{l} }

type strictListener struct{ net.Listener }

func (l strictListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &framingConn{Conn: c, watching: true}, nil
}

// Strict refuses the requests StrictListener marked, and closes a
// connection after a request with a chunked body; it serves the others
// with next.
func Strict(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get(framingHeader) != "" {
			w.Header().Set("Connection", "close")
			refuse(w, newRequestID(), http.StatusBadRequest)
			return
		}
		if len(req.TransferEncoding) > 0 {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, req)
	})
}

// framingConn passes on what a client sends, each request head once it
// has read it whole, marked if it gives its length twice.
type framingConn struct {
	net.Conn

	mu       sync.Mutex
	buf      []byte // in's storage, kept for the next head
	in       []byte // read, not passed on yet
	out      []byte // checked, to pass on
	err      error  // to return once out is passed on
	body     int64  // bytes of the current request's body still to come
	watching bool   // false: the connection no longer carries heads to check
}

// readSize is what one read of a head asks for at least.
const readSize = 4 << 10

func (c *framingConn) Read(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(c.out) == 0 {
		switch {
		case c.err != nil:
			return 0, c.err
		case !c.watching:
			if len(c.in) > 0 {
				c.out, c.in = c.in, nil
				continue
			}
			return c.Conn.Read(p)
		case c.body > 0:
			if len(c.in) == 0 {
				n, err := c.Conn.Read(p[:min(int64(len(p)), c.body)])
				c.body -= int64(n)
				return n, err
			}
			n := min(int64(len(c.in)), c.body)
			c.out, c.in = c.in[:n], c.in[n:]
			c.body -= n
		default:
			if end := headEnd(c.in); end >= 0 {
				c.out, c.in = c.check(c.in[:end]), c.in[end:]
				continue
			}
			if len(c.in) > maxHeadBytes {
				c.watching = false // net/http refuses a head this long
				continue
			}
			n, err := c.Conn.Read(c.room())
			c.in = c.in[:len(c.in)+n]
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					// net/http ends its look-ahead read with a deadline:
					// what was read so far stays for the next Read.
					return 0, err
				}
				c.out, c.in, c.err, c.watching = c.in, nil, err, false
			}
		}
	}
	n := copy(p, c.out)
	c.out = c.out[n:]
	return n, nil
}

// room makes in's storage hold readSize more bytes and returns that
// space. Nothing of out is left when it is called.
func (c *framingConn) room() []byte {
	if c.buf != nil && len(c.in) <= cap(c.buf)-readSize {
		// Back to the start of the storage (in may be its tail).
		c.in = c.buf[:copy(c.buf[:cap(c.buf)], c.in)]
	}
	if cap(c.in)-len(c.in) < readSize {
		grown := make([]byte, len(c.in), 2*len(c.in)+readSize)
		copy(grown, c.in)
		c.in = grown
		if cap(grown) <= 16*readSize {
			c.buf = grown
		}
	}
	return c.in[len(c.in):cap(c.in)]
}

// CloseWrite lets net/http close its side first, so that a client that
// is still sending reads the answer before the connection resets.
func (c *framingConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// headEnd is the length of the request head at the start of b (up to and
// with the empty line that ends it), or -1 if b does not hold it whole.
// Lines end with LF, CR LF accepted, as net/textproto reads them.
func headEnd(b []byte) int {
	i := bytes.IndexByte(b, '\n') // the request line
	if i < 0 {
		return -1
	}
	for i++; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		if line := b[i : i+j]; len(line) == 0 || len(line) == 1 && line[0] == '\r' {
			return i + j + 1
		}
		i += j + 1
	}
}

// check reads one request head: it says how much body follows (c.body),
// or stops watching when the connection will not carry another request
// after it, and returns the head to pass on, marked if it gives its length
// twice and without a client's own framingHeader.
func (c *framingConn) check(head []byte) []byte {
	var lengths []string
	chunked, forged, lastLength := false, false, false
	line, rest, _ := bytes.Cut(head, []byte("\n")) // the request line
	major, minor, ok := http.ParseHTTPVersion(string(lastField(bytes.TrimSuffix(line, []byte("\r")))))
	http10 := ok && (major < 1 || major == 1 && minor == 0)
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			// A continuation line (obs-fold): part of the header before.
			if lastLength {
				lengths[len(lengths)-1] += " " + textproto.TrimString(string(line))
			}
			continue
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		lastLength = bytes.EqualFold(name, []byte("Content-Length"))
		switch {
		case lastLength:
			lengths = append(lengths, textproto.TrimString(string(value)))
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = true
		case bytes.EqualFold(name, []byte(framingHeader)):
			forged = true
		}
	}
	twice := chunked && (len(lengths) > 0 || http10)
	if forged || twice {
		head = rewriteHead(head, twice)
	}
	switch {
	case twice || chunked:
		// Refused, or the last request on this connection (Strict).
		c.watching = false
	case len(lengths) > 0:
		n, ok := contentLength(lengths)
		if !ok {
			c.watching = false // net/http refuses it and closes
		}
		c.body = n
	}
	return head
}

// rewriteHead returns head without a client's framingHeader lines, and
// with the listener's own after the request line if mark.
func rewriteHead(head []byte, mark bool) []byte {
	var b bytes.Buffer
	line, rest, _ := bytes.Cut(head, []byte("\n"))
	b.Write(line)
	b.WriteByte('\n')
	if mark {
		b.WriteString(framingHeader + ": Content-Length and Transfer-Encoding\r\n")
	}
	for len(rest) > 0 {
		line, rest, _ = bytes.Cut(rest, []byte("\n"))
		if name, _, _ := bytes.Cut(line, []byte(":")); bytes.EqualFold(name, []byte(framingHeader)) {
			continue
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// lastField is what follows the last space of b.
func lastField(b []byte) []byte {
	return b[bytes.LastIndexByte(b, ' ')+1:]
}

// contentLength is the length Content-Length gives, as net/http reads
// it: every value the same decimal number.
func contentLength(values []string) (int64, bool) {
	first := values[0]
	for _, v := range values[1:] {
		if v != first {
			return 0, false
		}
	}
	if first == "" || strings.TrimLeft(first, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(first, 10, 64)
	return n, err == nil
}
