package funcserver

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The function server's own HTTP/1.1 server, for the hop from a gateway
// in another process (the gateway is its only client: mutual TLS with a
// control-plane member's certificate). net/http's server starts, for every
// request, a goroutine that reads the connection to notice the client
// going away, and wakes it again once the answer is written: two goroutine
// hand-offs per request, each a wake-up of another thread of the worker
// when it is otherwise idle, as costly here as the function call itself.
// ConnServer reads each request, runs the handler and writes the answer on
// the connection's own goroutine; the gateway closing a connection while
// a call runs (its client went away, or its timeout passed) is noticed
// through epoll and cancels the call, which stops the guest
// (conn_watch.go). An answer of known length goes out
// in one write with its head.
//
// What it keeps of net/http's server: persistent connections (HTTP/1.0
// keep-alive and Connection: close honored), request heads bounded in
// size (431) and in time (ReadHeaderTimeout), malformed requests answered
// 400 and the connection closed, Expect: 100-continue answered when the
// handler first reads the body, bodies of known length or chunked, a body
// the handler left unread discarded up to 256 KiB (else the connection is
// closed, and says so), answers with Content-Length when the handler's
// whole answer is known when it returns, else chunked, flushes, 1xx
// informational answers, HEAD and bodiless statuses, Date and sniffed
// Content-Type, http.ErrAbortHandler (the connection is closed, the
// answer cut short), graceful Shutdown (idle connections closed at once,
// busy ones after their answer) and Close. What it does not do: HTTP/2,
// upgrades (Hijack), trailers.

const (
	// maxHeadBytes bounds a request's head (net/http's default).
	maxHeadBytes = http.DefaultMaxHeaderBytes + 4096
	// maxPostHandlerRead is how much of a body the handler left unread is
	// read and dropped to keep the connection (net/http's bound).
	maxPostHandlerRead = 256 << 10
	// bufferBeforeChunking is how much of an answer is held to send it
	// with a Content-Length (and its head) in one write.
	bufferBeforeChunking = 4 << 10
)

// ConnServer serves HTTP/1.1 connections with Handler (see above).
type ConnServer struct {
	Handler http.Handler
	// TLS, if set, is the server side of every accepted connection.
	TLS *tls.Config
	// ReadHeaderTimeout bounds a TLS handshake and the reading of a
	// request's head once its first byte arrived (zero: none).
	ReadHeaderTimeout time.Duration
	Log               *slog.Logger

	mu      sync.Mutex
	lis     []net.Listener
	conns   map[*serverConn]struct{}
	closing atomic.Bool
	active  sync.WaitGroup // connections being served

	watchOnce sync.Once
	watch     *connWatcher // nil until the first call, or without epoll
}

// ErrServerClosed is what Serve returns after Shutdown or Close.
var ErrServerClosed = http.ErrServerClosed

// Serve accepts connections on lis until Shutdown or Close, serving each
// on a goroutine of its own.
func (s *ConnServer) Serve(lis net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		_ = lis.Close()
		return ErrServerClosed
	}
	s.lis = append(s.lis, lis)
	if s.conns == nil {
		s.conns = map[*serverConn]struct{}{}
	}
	s.mu.Unlock()
	var backoff time.Duration
	for {
		raw, err := lis.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of descriptors and the like: again in a moment.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log().Warn("function server: accepting a connection", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := s.newConn(raw)
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			_ = raw.Close()
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.active.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

func (s *ConnServer) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// Shutdown stops accepting connections, closes the idle ones, and waits
// for those serving a request to answer it and close, or for ctx.
func (s *ConnServer) Shutdown(ctx context.Context) error {
	s.stop()
	done := make(chan struct{})
	go func() {
		s.active.Wait()
		close(done)
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			s.stopWatcher()
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
			// A connection that was reading a request's first byte at
			// the first look may have gone idle since.
			s.closeIdle()
		}
	}
}

// Close closes the listeners and every connection at once: calls in
// flight are canceled.
func (s *ConnServer) Close() error {
	s.stop()
	s.mu.Lock()
	for c := range s.conns {
		c.close()
	}
	s.mu.Unlock()
	s.stopWatcher()
	return nil
}

// stopWatcher ends the epoll watcher, if one started, and keeps another
// from starting.
func (s *ConnServer) stopWatcher() {
	s.watchOnce.Do(func() {})
	if s.watch != nil {
		s.watch.stop()
	}
}

func (s *ConnServer) stop() {
	s.mu.Lock()
	s.closing.Store(true)
	for _, l := range s.lis {
		_ = l.Close()
	}
	s.lis = nil
	s.mu.Unlock()
	s.closeIdle()
}

func (s *ConnServer) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(connIdle, connClosed) {
			c.close()
		}
	}
}

// Connection states.
const (
	connIdle   int32 = iota // waiting for a request
	connActive              // reading, serving or answering one
	connClosed              // closed by Shutdown while idle
)

// serverConn is one connection.
type serverConn struct {
	s      *ConnServer
	raw    net.Conn
	conn   net.Conn // raw, or the TLS server over it
	remote string
	tls    *tls.ConnectionState
	sys    syscall.RawConn // raw's descriptor, nil if not a socket
	state  atomic.Int32
	ctx    context.Context // canceled when the connection ends
	cancel context.CancelCauseFunc

	in *connReader
	br *bufio.Reader
	bw *bufio.Writer

	// broken: the connection cannot carry another request (a write
	// failed, the watcher saw it closed, or a body was left unread).
	broken atomic.Bool

	// The call in flight, when it is watched by reading (conn_watch.go).
	watchMu sync.Mutex
	call    *callWatch
	dateBuf [len(http.TimeFormat)]byte
	clenBuf [20]byte
}

func (s *ConnServer) newConn(raw net.Conn) *serverConn {
	c := &serverConn{s: s, raw: raw, conn: raw, remote: raw.RemoteAddr().String()}
	if sc, ok := raw.(syscall.Conn); ok {
		c.sys, _ = sc.SyscallConn()
	}
	if s.TLS != nil {
		c.conn = tls.Server(raw, s.TLS)
	}
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	c.in = &connReader{c: c, left: -1}
	c.br = bufio.NewReaderSize(c.in, 4<<10)
	c.bw = bufio.NewWriterSize(checkWriter{c}, 8<<10)
	return c
}

func (c *serverConn) close() {
	c.cancel(errConnClosed)
	_ = c.raw.Close()
}

var errConnClosed = errors.New("the connection from the gateway closed")

func (c *serverConn) serve() {
	defer func() {
		c.close()
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		c.s.active.Done()
	}()
	if tc, ok := c.conn.(*tls.Conn); ok {
		if d := c.s.ReadHeaderTimeout; d > 0 {
			_ = c.raw.SetDeadline(time.Now().Add(d))
		}
		if err := tc.Handshake(); err != nil {
			c.s.log().Debug("function server: TLS handshake", "remote", c.remote, "err", err)
			return
		}
		_ = c.raw.SetDeadline(time.Time{})
		st := tc.ConnectionState()
		c.tls = &st
	}
	for {
		// Idle until a request's first byte arrives.
		c.in.left = maxHeadBytes
		if _, err := c.br.Peek(1); err != nil {
			return
		}
		if !c.state.CompareAndSwap(connIdle, connActive) {
			return // closed by Shutdown
		}
		if !c.serveRequest() || c.broken.Load() {
			return
		}
		c.state.Store(connIdle)
		if c.s.closing.Load() && c.state.CompareAndSwap(connIdle, connClosed) {
			return
		}
	}
}

// connReader reads the connection for br: the byte a watcher read first,
// and at most left bytes while a head is read (left < 0: no bound).
type connReader struct {
	c       *serverConn
	held    byte
	hasHeld bool
	left    int64
}

var errHeadTooLarge = errors.New("request head too large")

func (r *connReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if r.left == 0 {
		return 0, errHeadTooLarge
	}
	if r.left > 0 && int64(len(p)) > r.left {
		p = p[:r.left]
	}
	if r.hasHeld {
		p[0], r.hasHeld = r.held, false
		if r.left > 0 {
			r.left--
		}
		return 1, nil
	}
	n, err := r.c.conn.Read(p)
	if r.left > 0 {
		r.left -= int64(n)
	}
	return n, err
}

// checkWriter is the connection for bw: a failed write breaks the
// connection and cancels the call (nobody is left to answer).
type checkWriter struct{ c *serverConn }

func (w checkWriter) Write(p []byte) (int, error) {
	n, err := w.c.conn.Write(p)
	if err != nil {
		w.c.broken.Store(true)
		w.c.cancel(fmt.Errorf("writing the answer to the gateway: %w", err))
	}
	return n, err
}

// serveRequest reads one request, serves it and answers it; it reports
// whether the connection may carry another.
func (c *serverConn) serveRequest() bool {
	if d := c.s.ReadHeaderTimeout; d > 0 {
		_ = c.raw.SetReadDeadline(time.Now().Add(d))
	}
	req, err := http.ReadRequest(c.br)
	c.in.left = -1
	if err != nil {
		c.refuse(err)
		return false
	}
	if c.s.ReadHeaderTimeout > 0 {
		_ = c.raw.SetReadDeadline(time.Time{})
	}
	if req.ProtoMajor != 1 {
		c.refuse(fmt.Errorf("unsupported protocol %s", req.Proto))
		return false
	}
	if req.ProtoAtLeast(1, 1) && len(req.Header["Host"]) == 0 && req.Host == "" {
		c.refuse(errors.New("missing required Host header"))
		return false
	}
	req.RemoteAddr = c.remote
	req.TLS = c.tls
	ctx, cancel := context.WithCancelCause(c.ctx)
	defer cancel(nil)
	req = req.WithContext(ctx)
	w := &response{c: c, req: req, header: http.Header{}, contentLength: -1, closeAfter: req.Close}
	if req.Body != http.NoBody {
		w.body = &requestBody{c: c, w: w, r: req.Body}
		w.body.expect = req.ProtoAtLeast(1, 1) && strings.EqualFold(req.Header.Get("Expect"), "100-continue")
		req.Body = w.body
	}
	if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
		req.Header.Del("Expect")
	}
	cw := c.watchCall(w, cancel)
	aborted := c.runHandler(w, req)
	c.endWatch(cw)
	if aborted {
		return false
	}
	w.finish()
	return !w.closeAfter
}

// runHandler calls the handler; it reports whether it panicked (the
// answer is cut short: the connection must close).
func (c *serverConn) runHandler(w *response, req *http.Request) (aborted bool) {
	defer func() {
		if v := recover(); v != nil {
			aborted = true
			if v != http.ErrAbortHandler {
				c.s.log().Error("function server: panic serving a request", "remote", c.remote, "panic", fmt.Sprint(v))
			}
			_ = c.bw.Flush() // what was answered so far
		}
	}()
	c.s.Handler.ServeHTTP(w, req)
	return false
}

// refuse answers a request that could not be read, as net/http does, and
// the connection closes.
func (c *serverConn) refuse(err error) {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || c.broken.Load() {
		return
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return
	}
	code, text := http.StatusBadRequest, "400 Bad Request"
	if errors.Is(err, errHeadTooLarge) {
		code, text = http.StatusRequestHeaderFieldsTooLarge, "431 Request Header Fields Too Large"
	}
	_ = c.raw.SetWriteDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c.bw, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n%s: %s", code, http.StatusText(code), text, err)
	_ = c.bw.Flush()
	// What the client still sends would make closing reset the
	// connection, and the answer might be lost: the client gets a moment
	// to read it first (as net/http does).
	if cw, ok := c.raw.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		time.Sleep(rstAvoidanceDelay)
	}
}

// rstAvoidanceDelay is how long a connection closed after an error answer
// stays open for reading (net/http's).
const rstAvoidanceDelay = 500 * time.Millisecond

// requestBody is a request's body as the handler reads it.
type requestBody struct {
	c      *serverConn
	w      *response
	r      io.ReadCloser
	expect bool // 100 Continue is owed before the first read
	eof    bool
	err    error // a read error other than io.EOF
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.expect {
		b.expect = false
		if !b.w.headSent {
			_, _ = b.c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			_ = b.c.bw.Flush()
		}
	}
	n, err := b.r.Read(p)
	if err == io.EOF {
		b.eof = true
		b.c.bodyDone()
	} else if err != nil {
		b.err = err
	}
	return n, err
}

func (b *requestBody) Close() error { return nil }
