package funcserver

import (
	"context"
	"errors"
	"net"
	"sync"
	"syscall"
	"time"
)

// Noticing the gateway closing a connection while a call runs on it (the
// gateway's client went away, or its timeout passed): the call is
// canceled, which stops the guest. net/http's server reads the connection
// on a goroutine started for each request, woken again when the answer is
// written. Here one goroutine per server waits in epoll for the peer's
// end of any connection with a call in flight (EPOLLRDHUP, or an error):
// a call costs two epoll_ctl system calls and no wake-up. A connection
// that is not a socket (or if epoll cannot be had) is watched as net/http
// does, by a goroutine reading it once the request's body is read.

// errGatewayGone cancels a call whose connection the gateway closed.
var errGatewayGone = errors.New("the gateway closed the connection: its client went away or its timeout passed")

// connWatcher is a server's epoll watch of its connections' calls.
type connWatcher struct {
	epfd int
	wake [2]int // a pipe: a byte in it ends the loop

	mu    sync.Mutex
	next  uint64
	calls map[uint64]*callWatch
}

// callWatch is the watch of one call.
type callWatch struct {
	c      *serverConn
	cancel context.CancelCauseFunc
	token  uint64 // in the epoll registration, 0: watched by a goroutine

	// The goroutine watch (no epoll), under c.watchMu.
	bodyDone bool          // the request's body was read to its end (or none)
	ended    bool          // the call ended: no watch starts
	done     chan struct{} // set while a watcher runs; closed when it ends
}

// watcher returns the server's epoll watcher, started at the first call;
// nil if epoll cannot be had.
func (s *ConnServer) watcher() *connWatcher {
	s.watchOnce.Do(func() {
		w, err := newConnWatcher()
		if err != nil {
			s.log().Warn("function server: no epoll to watch connections; reading them instead", "err", err)
			return
		}
		s.watch = w
		go w.loop()
	})
	return s.watch
}

func newConnWatcher() (*connWatcher, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	w := &connWatcher{epfd: epfd, calls: map[uint64]*callWatch{}}
	if err := syscall.Pipe2(w.wake[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		_ = syscall.Close(epfd)
		return nil, err
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN} // token 0
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, w.wake[0], &ev); err != nil {
		w.closeFDs()
		return nil, err
	}
	return w, nil
}

func (w *connWatcher) closeFDs() {
	_ = syscall.Close(w.epfd)
	_ = syscall.Close(w.wake[0])
	_ = syscall.Close(w.wake[1])
}

// stop ends the loop, which closes the descriptors.
func (w *connWatcher) stop() { _, _ = syscall.Write(w.wake[1], []byte{0}) }

// loop cancels the calls whose connection's peer went away.
func (w *connWatcher) loop() {
	defer w.closeFDs()
	events := make([]syscall.EpollEvent, 64)
	for {
		n, err := syscall.EpollWait(w.epfd, events, -1)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return
		}
		for _, ev := range events[:n] {
			token := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if token == 0 {
				return
			}
			w.mu.Lock()
			cw := w.calls[token]
			w.mu.Unlock()
			if cw != nil {
				cw.c.broken.Store(true)
				cw.cancel(errGatewayGone)
			}
		}
	}
}

// add watches cw's connection until remove; false if it cannot.
func (w *connWatcher) add(cw *callWatch) bool {
	rc := cw.c.sys
	if rc == nil {
		return false
	}
	w.mu.Lock()
	w.next++
	cw.token = w.next
	w.calls[cw.token] = cw
	w.mu.Unlock()
	ev := syscall.EpollEvent{Events: syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(uint32(cw.token)), Pad: int32(uint32(cw.token >> 32))}
	var err error
	if cerr := rc.Control(func(fd uintptr) {
		err = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
	}); cerr != nil || err != nil {
		w.forget(cw)
		return false
	}
	return true
}

// remove ends cw's watch.
func (w *connWatcher) remove(cw *callWatch) {
	_ = cw.c.sys.Control(func(fd uintptr) {
		_ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, int(fd), nil)
	})
	w.forget(cw)
}

func (w *connWatcher) forget(cw *callWatch) {
	w.mu.Lock()
	delete(w.calls, cw.token)
	w.mu.Unlock()
	cw.token = 0
}

// watchCall starts the watch of a call on c.
func (c *serverConn) watchCall(w *response, cancel context.CancelCauseFunc) *callWatch {
	cw := &callWatch{c: c, cancel: cancel, bodyDone: w.body == nil}
	if wt := c.s.watcher(); wt != nil && wt.add(cw) {
		return cw
	}
	c.watchMu.Lock()
	c.call = cw
	c.startWatchLocked(cw)
	c.watchMu.Unlock()
	return cw
}

// bodyDone notes that the current request's body has been read whole.
func (c *serverConn) bodyDone() {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	if cw := c.call; cw != nil && !cw.ended {
		cw.bodyDone = true
		c.startWatchLocked(cw)
	}
}

// startWatchLocked starts a goroutine watch once the request's body is
// read (the handler's reads would race the watcher's), unless the next
// request is already here.
func (c *serverConn) startWatchLocked(cw *callWatch) {
	if !cw.bodyDone || cw.done != nil || c.br.Buffered() > 0 || c.in.hasHeld {
		return
	}
	cw.done = make(chan struct{})
	go c.watchByReading(cw)
}

// watchByReading reads the connection until the call ends (endWatch makes
// the read return) or the gateway closes it, which cancels the call.
func (c *serverConn) watchByReading(cw *callWatch) {
	defer close(cw.done)
	var b [1]byte
	n, err := c.conn.Read(b[:])
	if n == 1 {
		c.in.held, c.in.hasHeld = b[0], true
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return // endWatch
		}
		c.broken.Store(true)
		cw.cancel(errGatewayGone)
	}
}

// endWatch ends a call's watch once the handler returned.
func (c *serverConn) endWatch(cw *callWatch) {
	if cw.token != 0 {
		c.s.watch.remove(cw)
		return
	}
	c.watchMu.Lock()
	cw.ended = true
	c.call = nil
	done := cw.done
	c.watchMu.Unlock()
	if done == nil {
		return
	}
	_ = c.raw.SetReadDeadline(aLongTimeAgo)
	<-done
	_ = c.raw.SetReadDeadline(time.Time{})
}

// aLongTimeAgo is a deadline in the past: a read waiting returns at once.
var aLongTimeAgo = time.Unix(1, 0)
