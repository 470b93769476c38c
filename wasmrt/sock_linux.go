//go:build linux

package wasmrt

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/sys"
	"golang.org/x/sys/unix"
)

// WASI preview 1 values the socket calls use.
const (
	errnoAgain           = 6
	errnoBadf            = 8
	errnoNotDir          = 54
	errnoNotSock         = 57
	errnoNotSup          = 58
	errnoSpipe           = 70
	errnoNotConn         = 53
	fdflagNonblock       = 4
	filetypeSocketStream = 6
	eventFdRead          = 1
	eventFdWrite         = 2
	eventHangup          = 1 // eventrwflags: fd_readwrite_hangup
	recvPeek             = 1
	recvWaitall          = 2
	eventNbytes          = 16 // u64 in an fd_read/fd_write event
	eventFlags           = 24 // u16
	subFD                = 16 // u32 in an fd_read/fd_write subscription

	// socketRights are what fd_fdstat_get reports a socket may do: read,
	// write, set its flags, stat, poll, shut down and accept.
	socketRights = 1<<1 | 1<<3 | 1<<6 | 1<<21 | 1<<27 | 1<<28 | 1<<29
)

// sockets is an instance's table of sockets: its listeners and the
// connections accepted from them, by the descriptor numbers the guest
// knows. Only the instance's goroutine uses it, but for the wake-up that
// Stop sends from another.
//
// The guest waits for its sockets on an epoll instance of its own, which
// Go's netpoller watches like any socket: a waiting guest parks its
// goroutine, holding no thread, and is woken as a native Go server is.
type sockets struct {
	inst  *instance
	files map[int32]*sockFile

	ep      *os.File        // the epoll instance, non-blocking, in Go's netpoller
	epRC    syscall.RawConn // ep's
	watched map[int]uint32  // host descriptor -> events registered in ep
	want    map[int]uint32  // reused by every wait
	events  []unix.EpollEvent

	mu       sync.Mutex // guards closed against wakeUp
	closed   bool
	stopWake func() bool

	accepting sync.Once
	pfds      []unix.PollFd // what a wait waits for, and what it got
	subs      []pollSub     // reused by poll_oneoff
	iov       [][]byte      // reused by reads and writes
}

// sockFile is one socket: a host descriptor, non-blocking on the host
// whatever the guest set.
type sockFile struct {
	fd       int
	listener bool
	nonblock bool // FDFLAG_NONBLOCK as the guest sees it
}

// newSockets preopens duplicates of listeners for instance i, the first
// at descriptor first.
func newSockets(i *instance, listeners []*os.File, first int32) (_ *sockets, err error) {
	s := &sockets{inst: i, files: map[int32]*sockFile{}, watched: map[int]uint32{}, want: map[int]uint32{},
		events: make([]unix.EpollEvent, 16)}
	defer func() {
		if err != nil {
			s.close() // Don't leak the descriptors on error.
		}
	}()
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("sockets: epoll: %w", err)
	}
	if err := unix.SetNonblock(ep, true); err != nil {
		_ = unix.Close(ep)
		return nil, fmt.Errorf("sockets: epoll: %w", err)
	}
	s.ep = os.NewFile(uintptr(ep), "epoll")
	if s.epRC, err = s.ep.SyscallConn(); err != nil {
		return nil, fmt.Errorf("sockets: epoll: %w", err)
	}
	for n, f := range listeners {
		fd, err := dupListener(f)
		if err != nil {
			return nil, fmt.Errorf("sockets: listener %d (%s): %w", n, f.Name(), err)
		}
		s.files[first+int32(n)] = &sockFile{fd: fd, listener: true}
	}
	s.stopWake = context.AfterFunc(i.ctx, s.wakeUp)
	return s, nil
}

// dupListener duplicates a listener's descriptor (dupFD), after checking
// it is a listening socket.
func dupListener(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	listening := 0
	var opErr error
	if err := rc.Control(func(sysfd uintptr) {
		listening, opErr = unix.GetsockoptInt(int(sysfd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	}); err != nil {
		return -1, err
	}
	if opErr != nil {
		return -1, opErr
	}
	if listening == 0 {
		return -1, errors.New("not a listening socket")
	}
	return dupFD(f)
}

// dupFD duplicates f's descriptor, close-on-exec and non-blocking on the
// host.
func dupFD(f *os.File) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	var opErr error
	if err := rc.Control(func(sysfd uintptr) {
		fd, opErr = unix.FcntlInt(sysfd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, err
	}
	if opErr != nil {
		return -1, opErr
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// wakeUp ends any wait of the guest: Stop canceled the instance.
func (s *sockets) wakeUp() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		_ = s.ep.SetReadDeadline(time.Unix(1, 0))
	}
}

// close closes every socket of the instance (it has ended). Safe to call
// twice.
func (s *sockets) close() {
	if s.stopWake != nil {
		s.stopWake()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for num, f := range s.files {
		_ = unix.Close(f.fd)
		delete(s.files, num)
	}
	if s.ep != nil {
		_ = s.ep.Close()
	}
}

// markAccepting tells the worker the guest waits for connections.
func (s *sockets) markAccepting() {
	s.accepting.Do(func() {
		if s.inst.accepting != nil {
			close(s.inst.accepting)
		}
	})
}

// wait blocks until fd is ready for events (POLLIN or POLLOUT).
func (s *sockets) wait(fd int, events int16) {
	s.pfds = append(s.pfds[:0], unix.PollFd{Fd: int32(fd), Events: events})
	s.block(-1)
}

// block waits until one of s.pfds is ready, for up to timeout nanoseconds
// (less than 0: no limit), and sets their Revents. The guest counts as
// sleeping meanwhile. If the instance was stopped, the guest ends here,
// as a cut-short sleep does.
func (s *sockets) block(timeout int64) {
	i := s.inst
	s.watch()
	guestProcs.leave() // a waiting guest needs no P
	began := time.Now()
	i.sleepingSince.Store(began.UnixNano())
	defer func() {
		i.slept.Add(int64(time.Since(began)))
		i.sleepingSince.Store(0)
		guestProcs.enter()
	}()
	n := s.epollWait(timeout)
	for k := range s.pfds {
		s.pfds[k].Revents = 0
	}
	for _, ev := range s.events[:n] {
		for k := range s.pfds {
			if p := &s.pfds[k]; p.Fd == ev.Fd {
				p.Revents |= int16(ev.Events) & (p.Events | unix.POLLERR | unix.POLLHUP)
			}
		}
	}
	if i.ctx.Err() != nil {
		panic(sys.NewExitError(sys.ExitCodeContextCanceled))
	}
}

// watch makes the epoll instance watch what s.pfds ask, and nothing else
// (level-triggered: a ready socket no wait asks about would end every
// wait). A guest that waits on the same sockets each time costs nothing.
func (s *sockets) watch() {
	clear(s.want)
	for _, p := range s.pfds {
		s.want[int(p.Fd)] |= uint32(uint16(p.Events))
	}
	_ = s.epRC.Control(func(ep uintptr) {
		for fd := range s.watched {
			if _, ok := s.want[fd]; !ok {
				_ = unix.EpollCtl(int(ep), unix.EPOLL_CTL_DEL, fd, nil)
				delete(s.watched, fd)
			}
		}
		for fd, events := range s.want {
			old, ok := s.watched[fd]
			if ok && old == events {
				continue
			}
			op := unix.EPOLL_CTL_ADD
			if ok {
				op = unix.EPOLL_CTL_MOD
			}
			if unix.EpollCtl(int(ep), op, fd, &unix.EpollEvent{Events: events, Fd: int32(fd)}) == nil {
				s.watched[fd] = events
			}
		}
	})
}

// unwatch stops watching fd, before it is closed: a listener is a
// duplicate, whose watch closing it would not end.
func (s *sockets) unwatch(fd int) {
	if _, ok := s.watched[fd]; !ok {
		return
	}
	delete(s.watched, fd)
	_ = s.epRC.Control(func(ep uintptr) { _ = unix.EpollCtl(int(ep), unix.EPOLL_CTL_DEL, fd, nil) })
}

// epollWait waits until the epoll instance has events, for up to timeout
// nanoseconds (less than 0: no limit) or until Stop, and returns how many
// it read into s.events. The wait parks the goroutine in Go's netpoller.
func (s *sockets) epollWait(timeout int64) int {
	n := 0
	check := func(fd uintptr) bool {
		for {
			k, err := unix.EpollWait(int(fd), s.events, 0)
			if err == unix.EINTR {
				continue
			}
			n = max(k, 0)
			return n > 0
		}
	}
	if timeout == 0 {
		_ = s.epRC.Control(func(fd uintptr) { check(fd) })
		return n
	}
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(time.Duration(timeout))
	}
	_ = s.ep.SetReadDeadline(deadline)
	if s.inst.ctx.Err() != nil {
		return 0 // stopped: wakeUp's deadline may have come before this one
	}
	if err := s.epRC.Read(check); err != nil && s.inst.ctx.Err() == nil {
		// The timeout: what is ready now, as poll(2) would report it.
		_ = s.epRC.Control(func(fd uintptr) { check(fd) })
	}
	return n
}

// nextConnFD is the lowest free number for an accepted connection.
func (s *sockets) nextConnFD() int32 {
	n := int32(connFDBase)
	for s.files[n] != nil {
		n++
	}
	return n
}

// accept is sock_accept on listener f.
func (s *sockets) accept(f *sockFile, flags uint16) (int32, uint16) {
	if !f.listener {
		return 0, errnoNotSock
	}
	if flags&^fdflagNonblock != 0 {
		return 0, errnoInval
	}
	s.markAccepting()
	for {
		nfd, _, err := unix.Accept4(f.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch err {
		case nil:
			// As Go's net does for its connections: a guest cannot set
			// socket options, and small writes should not wait for ACKs.
			_ = unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
			num := s.nextConnFD()
			s.files[num] = &sockFile{fd: nfd, nonblock: flags&fdflagNonblock != 0}
			return num, 0
		case unix.EINTR, unix.ECONNABORTED:
		case unix.EAGAIN:
			if f.nonblock {
				return 0, errnoAgain
			}
			s.wait(f.fd, unix.POLLIN)
		default:
			return 0, wasiErrno(err)
		}
	}
}

// recv reads into bufs (fd_read, sock_recv): a blocking socket waits for
// data (and with MSG_WAITALL for all of bufs), a non-blocking one answers
// EAGAIN.
func (s *sockets) recv(f *sockFile, bufs [][]byte, flags int) (int, uint16) {
	if f.listener {
		return 0, errnoNotConn
	}
	total := 0
	for {
		var n int
		var err error
		if flags&^unix.MSG_WAITALL == 0 {
			n, err = unix.Readv(f.fd, bufs)
		} else {
			n, _, _, _, err = unix.RecvmsgBuffers(f.fd, bufs, nil, flags&^unix.MSG_WAITALL)
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN && (f.nonblock || total > 0 && flags&unix.MSG_WAITALL == 0):
			if total > 0 {
				return total, 0
			}
			return 0, errnoAgain
		case err == unix.EAGAIN:
			s.wait(f.fd, unix.POLLIN)
			continue
		case err != nil:
			if total > 0 {
				return total, 0
			}
			return 0, wasiErrno(err)
		}
		total += n
		bufs = advance(bufs, n)
		if n == 0 || len(bufs) == 0 || flags&unix.MSG_WAITALL == 0 || f.nonblock {
			return total, 0
		}
	}
}

// send writes bufs (fd_write, sock_send): a blocking socket writes them
// all, waiting as it must; a non-blocking one what it can, or EAGAIN.
func (s *sockets) send(f *sockFile, bufs [][]byte) (int, uint16) {
	if f.listener {
		return 0, errnoNotConn
	}
	total := 0
	for {
		n, err := unix.SendmsgBuffers(f.fd, bufs, nil, nil, unix.MSG_NOSIGNAL)
		if n > 0 {
			total += n
			bufs = advance(bufs, n)
		}
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN && f.nonblock:
			if total > 0 {
				return total, 0
			}
			return 0, errnoAgain
		case err == unix.EAGAIN:
			s.wait(f.fd, unix.POLLOUT)
			continue
		case err != nil:
			if total > 0 {
				return total, 0
			}
			return 0, wasiErrno(err)
		}
		if len(bufs) == 0 || n == 0 || f.nonblock {
			return total, 0
		}
	}
}

// advance drops the first n bytes of bufs, and the buffers left empty.
func advance(bufs [][]byte, n int) [][]byte {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if len(bufs) > 0 && n > 0 {
		bufs[0] = bufs[0][n:]
	}
	return bufs
}

// iovecs maps the guest's iovec array at iovs (n entries) to slices of
// its memory, which reads fill and writes send.
func (s *sockets) iovecs(mem api.Memory, iovs, n uint32) ([][]byte, bool) {
	s.iov = s.iov[:0]
	raw, ok := mem.Read(iovs, n*8)
	if !ok {
		return nil, false
	}
	for k := range n {
		ptr := binary.LittleEndian.Uint32(raw[k*8:])
		size := binary.LittleEndian.Uint32(raw[k*8+4:])
		b, ok := mem.Read(ptr, size)
		if !ok {
			return nil, false
		}
		if size > 0 {
			s.iov = append(s.iov, b)
		}
	}
	return s.iov, true
}

// closeFD closes one socket (fd_close).
func (s *sockets) closeFD(num int32, f *sockFile) uint16 {
	delete(s.files, num)
	s.unwatch(f.fd)
	if err := unix.Close(f.fd); err != nil {
		return wasiErrno(err)
	}
	return 0
}

// pollSub is one subscription of a poll_oneoff call that involves sockets.
type pollSub struct {
	userdata uint64
	tag      byte
	timeout  int64     // clocks
	sock     *sockFile // fd subscriptions on a socket
	pfd      int       // its entry in sockets.pfds
}

// pollOneoff answers a poll_oneoff call that waits on at least one of
// the instance's sockets, and reports whether it did: other calls are
// left to the rest of the runtime's poll_oneoff. It waits on the
// instance's epoll (block) until a socket is ready or the earliest
// relative clock expires, and
// reports every subscription that then holds. Descriptors that are not
// sockets (files, stdio) are reported ready at once, as a regular file
// always is; absolute clocks are ENOTSUP, as in wazero.
func (s *sockets) pollOneoff(mod api.Module, stack []uint64) bool {
	in, out, n, resultNevents := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3])
	mem := mod.Memory()
	if n == 0 || mem == nil {
		return false
	}
	raw, ok := mem.Read(in, n*subSize)
	if !ok {
		return false
	}
	onSockets := false
	for k := range n {
		sub := raw[k*subSize:]
		if tag := sub[subTag]; (tag == eventFdRead || tag == eventFdWrite) && s.files[int32(binary.LittleEndian.Uint32(sub[subFD:]))] != nil {
			onSockets = true
			break
		}
	}
	evs, evOK := mem.Read(out, n*eventSize)
	if !onSockets || !evOK {
		return false
	}

	s.subs, s.pfds = s.subs[:0], s.pfds[:0]
	timeout := int64(-1)
	for k := range n {
		sub := raw[k*subSize:]
		ps := pollSub{userdata: binary.LittleEndian.Uint64(sub[subUserdata:]), tag: sub[subTag], pfd: -1}
		switch ps.tag {
		case 0: // clock
			switch binary.LittleEndian.Uint16(sub[subFlags:]) {
			case 0:
			case 1:
				stack[0] = errnoNotSup
				return true
			default:
				stack[0] = errnoInval
				return true
			}
			ps.timeout = int64(binary.LittleEndian.Uint64(sub[subTimeout:]))
			if timeout < 0 || ps.timeout < timeout {
				timeout = ps.timeout
			}
		case eventFdRead, eventFdWrite:
			f := s.files[int32(binary.LittleEndian.Uint32(sub[subFD:]))]
			if f == nil {
				timeout = 0 // not a socket: ready now
				break
			}
			events := int16(unix.POLLOUT)
			if ps.tag == eventFdRead {
				events = unix.POLLIN
				if f.listener {
					s.markAccepting()
				}
			}
			ps.sock, ps.pfd = f, len(s.pfds)
			s.pfds = append(s.pfds, unix.PollFd{Fd: int32(f.fd), Events: events})
		default:
			stack[0] = errnoInval
			return true
		}
		s.subs = append(s.subs, ps)
	}

	began := time.Now()
	var nevents uint32
	for nevents == 0 {
		wait := timeout
		if timeout > 0 {
			wait = max(0, timeout-int64(time.Since(began)))
		}
		for k := range s.pfds {
			s.pfds[k].Revents = 0
		}
		s.block(wait)
		elapsed := int64(time.Since(began))
		for _, ps := range s.subs {
			var ev [eventSize]byte
			switch {
			case ps.tag == 0:
				if elapsed < ps.timeout {
					continue
				}
			case ps.sock == nil:
			default:
				re := s.pfds[ps.pfd].Revents
				if re == 0 {
					continue
				}
				if re&unix.POLLNVAL != 0 {
					binary.LittleEndian.PutUint16(ev[eventErrno:], errnoBadf)
				}
				if re&unix.POLLHUP != 0 {
					binary.LittleEndian.PutUint16(ev[eventFlags:], eventHangup)
				}
				if ps.tag == eventFdRead && !ps.sock.listener {
					if avail, err := unix.IoctlGetInt(ps.sock.fd, unix.SIOCINQ); err == nil && avail > 0 {
						binary.LittleEndian.PutUint64(ev[eventNbytes:], uint64(avail))
					}
				}
			}
			binary.LittleEndian.PutUint64(ev[subUserdata:], ps.userdata)
			binary.LittleEndian.PutUint32(ev[eventType:], uint32(ps.tag))
			copy(evs[nevents*eventSize:], ev[:])
			nevents++
		}
	}
	if !mem.WriteUint32Le(resultNevents, nevents) {
		stack[0] = errnoFault
		return true
	}
	stack[0] = 0
	return true
}
