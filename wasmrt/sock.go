package wasmrt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/tetratelabs/wazero"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// A Wasm service is an instance that serves on TCP listeners the worker
// opened (InstanceSpec.Listeners): the runtime preopens them for the guest,
// which accepts connections with WASI's sock_accept and reads and writes
// them as files, as wazero's experimental sock configuration and
// wasmtime's --tcplisten offer.
//
// wazero's sock configuration opens the listeners itself, from host:port,
// and its poll_oneoff cannot wait on a socket: it reports every
// non-blocking descriptor ready at once and fd_write subscriptions as
// ENOTSUP, so a Go guest (whose scheduler waits on its sockets through
// poll_oneoff) spins a core while idle. The runtime therefore keeps an
// instance's sockets in a table of its own (sock_linux.go): host
// descriptors, always non-blocking on the host, whose WASI calls
// (sock_accept, sock_recv, sock_send, sock_shutdown, fd_read, fd_write,
// fd_close, fd_fdstat_*, ...) it answers itself, and a poll_oneoff that
// waits on them for real, on an epoll instance of the guest's that Go's
// netpoller watches (the guest's goroutine parks, holding no thread), and
// that Stop interrupts.
//
// Descriptor numbers: wasi-libc and Go find the preopened directories by
// asking fd_prestat_get from fd 3 upwards until EBADF, so the listeners
// come after the directories (fd 3 when there are none), as in wazero. So
// that wazero never gives a file the guest opens the number of a
// listener, each listener's number is held in wazero's table by an empty
// directory the guest never sees (its calls are the runtime's). Accepted
// connections are numbered from connFDBase up, far above what wazero's
// table reaches.

// connFDBase is the first descriptor number of an accepted connection.
const connFDBase = 1 << 20

// listenFDEnv names the variable that tells a service the descriptor of
// its first listener.
const listenFDEnv = "LISTEN_FD"

// Accepting is closed once the guest of a Wasm service first waits for a
// connection on one of its listeners (sock_accept, or poll_oneoff on it):
// it is then ready for traffic. It is nil for an instance without
// listeners.
func (i *instance) Accepting() <-chan struct{} { return i.accepting }

// preopenCount is how many directories an instance with these files and
// mounts has preopened: one per top-level directory of its files (as
// filesConfig mounts them) and one per mount.
func preopenCount(files map[string][]byte, mounts []runtimeapi.Mount) int {
	tops := map[string]bool{}
	for p := range files {
		p = strings.TrimPrefix(path.Clean("/"+p), "/")
		if top, rest, ok := strings.Cut(p, "/"); ok && rest != "" {
			tops[top] = true
		}
	}
	return len(tops) + len(mounts)
}

// reserveListenerFDs adds to fsc, whose mounts are all preopened already,
// one hidden empty directory per listener, so that wazero's table holds
// the listeners' numbers. Without directories (fsc nil) the guest can open
// no file, so nothing needs holding.
func reserveListenerFDs(fsc wazero.FSConfig, listeners int) wazero.FSConfig {
	if fsc == nil {
		return nil
	}
	for n := range listeners {
		fsc = fsc.(sysfs.FSConfig).WithSysFSMount(listenerSlot{}, "/.wasmorch-listener-"+strconv.Itoa(n))
	}
	return fsc
}

// listenerSlot is the file system that holds a listener's number in
// wazero's table. The runtime answers every call on that number, so it is
// only reached by a path relative to the listener, which is not a
// directory.
type listenerSlot struct {
	experimentalsys.UnimplementedFS
}

// OpenFile implements experimentalsys.FS.
func (listenerSlot) OpenFile(string, experimentalsys.Oflag, os.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	return nil, experimentalsys.ENOTDIR
}

// withGuestSockets is withGuest for an instance with sockets.
func withGuestSockets(ctx context.Context, env []string, sleep func(int64), socks *sockets) context.Context {
	return context.WithValue(ctx, guestKey{}, &guestCall{env: env, sleep: sleep, socks: socks})
}

// AcceptsConnections says whether a module can serve as a Wasm service:
// it imports WASI's sock_accept, which every guest that accepts
// connections on a preopened listener calls (wasi-libc's accept, Go's
// net.FileListener). It reads the import section only, without
// compiling; bytes that are not a module are an error.
func AcceptsConnections(wasm []byte) (bool, error) {
	r := wasmReader{b: wasm}
	if !bytes.HasPrefix(wasm, []byte("\x00asm\x01\x00\x00\x00")) {
		return false, errors.New("not a WebAssembly core module")
	}
	r.b = r.b[8:]
	for len(r.b) > 0 {
		id := r.byte()
		size := r.uleb()
		if r.err != nil || uint64(len(r.b)) < size {
			return false, errors.New("truncated section")
		}
		body := wasmReader{b: r.b[:size]}
		r.b = r.b[size:]
		if id != 2 { // the import section
			continue
		}
		for n := body.uleb(); n > 0 && body.err == nil; n-- {
			mod, name := body.name(), body.name()
			kind := body.byte()
			if kind == 0 && mod == wasi_snapshot_preview1.ModuleName && name == "sock_accept" {
				return true, nil
			}
			switch kind {
			case 0: // function: a type index
				body.uleb()
			case 1: // table: a reference type and limits
				body.byte()
				body.limits()
			case 2: // memory: limits
				body.limits()
			case 3: // global: a value type and mutability
				body.byte()
				body.byte()
			default:
				return false, fmt.Errorf("import %s.%s has unknown kind %d", mod, name, kind)
			}
		}
		if body.err != nil {
			return false, body.err
		}
		return false, nil
	}
	return false, r.err
}

// wasmReader reads the binary format's primitives; the first error sticks.
type wasmReader struct {
	b   []byte
	err error
}

func (r *wasmReader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errors.New("truncated module")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *wasmReader) uleb() uint64 {
	var v uint64
	for shift := 0; shift < 64; shift += 7 {
		c := r.byte()
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			return v
		}
	}
	r.err = errors.New("malformed LEB128 number")
	return 0
}

func (r *wasmReader) name() string {
	n := r.uleb()
	if r.err != nil || uint64(len(r.b)) < n {
		r.err = errors.New("truncated name")
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *wasmReader) limits() {
	flags := r.byte()
	r.uleb()
	if flags&1 != 0 {
		r.uleb()
	}
}
