package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// The hop to a worker's function server. Across processes a warm request
// costs the gateway two more loopback exchanges than a native handler's;
// net/http's Transport adds two goroutine hand-offs per request on top
// (its per-connection writer and reader goroutines), each a wake-up of
// another thread on a loaded node. workerTransport sends a request whose
// body is in memory (none, or one the gateway buffered to be able to
// replay it) on a kept HTTP/1.1 connection, written and read by the
// goroutine that sends it: one write, then the answer read where it
// arrives. Requests whose body streams (too large to buffer, or of unknown
// length) and upgrades go through net/http's Transport, which writes the
// body while it reads the answer.
//
// A kept connection the worker has closed (it stopped, or was killed) is
// found before it is used: an idle connection is looked at without
// blocking (a peek at the socket) and dropped if the worker closed it or
// wrote to it. A request that still finds its kept connection broken
// before any answer arrives is sent again on a new connection when that is
// harmless (an idempotent method, a body it can send again), as net/http
// does.

const (
	// workerDialTimeout bounds a TCP connect to a worker.
	workerDialTimeout = 5 * time.Second
	// workerMaxIdle is how many idle connections the gateway keeps per
	// worker: few workers, many requests each.
	workerMaxIdle = 1024
	// workerIdleTimeout closes a connection idle this long.
	workerIdleTimeout = 90 * time.Second
	// maxInformational bounds the 1xx answers read before the final one.
	maxInformational = 5
	// maxAnswerHeadBytes bounds what is read of an answer before its body
	// (net/http's Transport reads at most 10 MB; a function's own CGI
	// headers are held to 64 KiB by the worker).
	maxAnswerHeadBytes = 1 << 20
)

// workerTransport is an http.RoundTripper to the workers' function servers
// (see above).
type workerTransport struct {
	tls      *tls.Config // nil: plain HTTP
	dialer   net.Dialer
	fallback http.RoundTripper

	mu   sync.Mutex
	idle map[string][]*workerConn // by address; most recently used last
}

// workerTLS is cfg with a session cache: a new connection to a worker
// resumes the TLS session of an earlier one (no certificates sent, no
// signatures).
func workerTLS(cfg *tls.Config) *tls.Config {
	if cfg == nil || cfg.ClientSessionCache != nil {
		return cfg
	}
	cfg = cfg.Clone()
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(256)
	return cfg
}

// newWorkerTransport sends over TLS with cfg (nil: plain HTTP), through
// fallback what it does not send itself.
func newWorkerTransport(cfg *tls.Config, fallback http.RoundTripper) *workerTransport {
	return &workerTransport{
		tls:      cfg,
		dialer:   net.Dialer{Timeout: workerDialTimeout, KeepAlive: 30 * time.Second},
		fallback: fallback,
		idle:     map[string][]*workerConn{},
	}
}

// workerConn is one kept connection to a worker.
type workerConn struct {
	t         *workerTransport
	addr      string
	raw       net.Conn   // the TCP connection
	conn      net.Conn   // raw, or the TLS client over it
	lim       *readLimit // under br: bounds the answer's head
	br        *bufio.Reader
	bw        *bufio.Writer
	idleSince time.Time
}

// sendsInMemory reports whether req's body is none or in memory (a body
// the gateway buffered, GetBody set), and req is no upgrade: those
// requests go on a kept connection, the rest through the fallback.
func sendsInMemory(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody && (req.GetBody == nil || req.ContentLength <= 0) {
		return false
	}
	return req.Header.Get("Upgrade") == ""
}

// RoundTrip implements http.RoundTripper.
func (t *workerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !sendsInMemory(req) {
		return t.fallback.RoundTrip(req)
	}
	ctx := req.Context()
	fresh := false
	for {
		wc, reused, err := t.get(ctx, req.URL.Host, fresh)
		if err != nil {
			return nil, err
		}
		resp, err := wc.roundTrip(req)
		if err == nil {
			return resp, nil
		}
		var ne noAnswer
		if !reused || !errors.As(err, &ne) || !replayable(req) || ctx.Err() != nil {
			return nil, err
		}
		// A kept connection the worker closed under us before answering:
		// once more on a new one.
		if req.GetBody != nil {
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			req.Body = body
		}
		fresh = true
	}
}

// replayable says whether a request may be sent again on a new connection
// after its kept one broke before any answer (net/http's rule): an
// idempotent method with a body it can send again.
func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
	default:
		if _, ok := req.Header["Idempotency-Key"]; !ok {
			if _, ok := req.Header["X-Idempotency-Key"]; !ok {
				return false
			}
		}
	}
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// noAnswer is an error on a connection before any byte of the answer.
type noAnswer struct{ err error }

func (e noAnswer) Error() string { return e.err.Error() }
func (e noAnswer) Unwrap() error { return e.err }

// get returns a kept connection to addr (reused true) or a new one.
func (t *workerTransport) get(ctx context.Context, addr string, fresh bool) (*workerConn, bool, error) {
	for !fresh {
		t.mu.Lock()
		list := t.idle[addr]
		if len(list) == 0 {
			t.mu.Unlock()
			break
		}
		wc := list[len(list)-1]
		list[len(list)-1] = nil
		t.idle[addr] = list[:len(list)-1]
		t.mu.Unlock()
		if time.Since(wc.idleSince) < workerIdleTimeout && wc.alive() {
			return wc, true, nil
		}
		wc.close()
	}
	wc, err := t.dial(ctx, addr)
	return wc, false, err
}

// dial opens a connection to addr, with TLS when the transport has it.
// A failed connect is a *net.OpError of Op "dial" (nothing was sent).
func (t *workerTransport) dial(ctx context.Context, addr string) (*workerConn, error) {
	raw, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conn := raw
	if t.tls != nil {
		tc := tls.Client(raw, t.tls)
		hctx, cancel := context.WithTimeout(ctx, workerDialTimeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			_ = raw.Close()
			return nil, fmt.Errorf("TLS handshake with the worker at %s: %w", addr, err)
		}
		conn = tc
	}
	lim := &readLimit{r: conn, left: math.MaxInt64}
	return &workerConn{
		t: t, addr: addr, raw: raw, conn: conn, lim: lim,
		br: bufio.NewReaderSize(lim, 16<<10),
		bw: bufio.NewWriterSize(conn, 16<<10),
	}, nil
}

// readLimit fails reads once left bytes have been read.
type readLimit struct {
	r    io.Reader
	left int64
}

var errAnswerHeadTooLarge = fmt.Errorf("the worker's answer has more than %d bytes before its body", maxAnswerHeadBytes)

func (l *readLimit) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errAnswerHeadTooLarge
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// alive looks, without blocking, whether the worker closed an idle
// connection or wrote to it (either way it cannot carry a request).
func (wc *workerConn) alive() bool {
	if wc.br.Buffered() > 0 {
		return false
	}
	sc, ok := wc.raw.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var buf [1]byte
	alive := false
	err = rc.Read(func(fd uintptr) bool {
		n, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = n < 0 && (rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK)
		return true
	})
	return err == nil && alive
}

// put keeps wc for the next request to its worker.
func (t *workerTransport) put(wc *workerConn) {
	now := time.Now()
	wc.idleSince = now
	var expired []*workerConn
	t.mu.Lock()
	list := t.idle[wc.addr]
	// The least recently used come first: those idle too long go.
	for len(list) > 0 && now.Sub(list[0].idleSince) >= workerIdleTimeout {
		expired = append(expired, list[0])
		list[0] = nil
		list = list[1:]
	}
	full := len(list) >= workerMaxIdle
	if !full {
		list = append(list, wc)
	}
	if len(list) == 0 {
		delete(t.idle, wc.addr)
	} else {
		t.idle[wc.addr] = list
	}
	t.mu.Unlock()
	if full {
		expired = append(expired, wc)
	}
	for _, c := range expired {
		c.close()
	}
}

func (wc *workerConn) close() { _ = wc.raw.Close() }

// roundTrip writes req and reads the answer's head; the body is read from
// the connection as the caller reads it, and the connection is kept once
// it is read to its end.
func (wc *workerConn) roundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	// Canceled or out of time: the connection is closed, which also tells
	// the worker to stop the call.
	stop := context.AfterFunc(ctx, wc.close)
	fail := func(err error) (*http.Response, error) {
		stop()
		wc.close()
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, err
	}
	if err := req.Write(wc.bw); err != nil {
		return fail(noAnswer{err})
	}
	if err := wc.bw.Flush(); err != nil {
		return fail(noAnswer{err})
	}
	var resp *http.Response
	wc.lim.left = maxAnswerHeadBytes
	for informational := 0; ; informational++ {
		r, err := http.ReadResponse(wc.br, req)
		if err != nil {
			if informational == 0 && wc.br.Buffered() == 0 && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)) {
				err = noAnswer{err}
			}
			return fail(err)
		}
		if r.StatusCode >= 200 || r.StatusCode == http.StatusSwitchingProtocols {
			resp = r
			break
		}
		// 100 Continue and the like: the final answer follows.
		if informational == maxInformational {
			return fail(errors.New("too many 1xx answers from the worker"))
		}
	}
	wc.lim.left = math.MaxInt64
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return fail(errors.New("the worker switched protocols for a request that asked for no upgrade"))
	}
	keep := !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		wc.done(stop, keep)
		return resp, nil
	}
	resp.Body = &workerBody{wc: wc, body: resp.Body, stop: stop, keep: keep}
	return resp, nil
}

// done ends a request on wc: kept for the next one if its answer was read
// whole, allows it, and the request was not canceled.
func (wc *workerConn) done(stop func() bool, keep bool) {
	if stop() && keep {
		wc.t.put(wc)
		return
	}
	wc.close()
}

// workerBody is an answer's body read from a kept connection.
type workerBody struct {
	wc   *workerConn
	body io.ReadCloser
	stop func() bool
	keep bool
	mu   sync.Mutex
	end  bool
}

func (b *workerBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.end {
		return 0, io.EOF
	}
	n, err := b.body.Read(p)
	if err != nil {
		b.end = true
		b.wc.done(b.stop, b.keep && errors.Is(err, io.EOF))
	}
	return n, err
}

// Close before the end: the rest of the answer is still on the
// connection, which cannot carry another request.
func (b *workerBody) Close() error {
	if !b.mu.TryLock() {
		// A Read is blocked on the connection: closing it ends the Read.
		b.wc.close()
		return nil
	}
	defer b.mu.Unlock()
	if !b.end {
		b.end = true
		b.stop()
		b.wc.close()
	}
	return nil
}
