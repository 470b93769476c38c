//go:build linux

package wasmrt

// The WASI host functions of sockets: which calls the runtime answers
// itself for a socket descriptor, how their arguments are read from the
// guest's memory and their results written back, and how host errors
// become WASI's. The sockets themselves (the table, accepting, reading,
// writing, waiting) are in sock_linux.go.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"golang.org/x/sys/unix"
)

// wasiErrno maps a host errno to WASI's.
func wasiErrno(err error) uint16 {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return errnoIO
	}
	switch errno {
	case unix.EAGAIN:
		return errnoAgain
	case unix.EBADF:
		return errnoBadf
	case unix.ECONNABORTED:
		return 13
	case unix.ECONNREFUSED:
		return 14
	case unix.ECONNRESET:
		return 15
	case unix.EINTR:
		return 27
	case unix.EINVAL:
		return errnoInval
	case unix.EMFILE:
		return 33
	case unix.ENFILE:
		return 41
	case unix.ENOBUFS:
		return 42
	case unix.ENOMEM:
		return 48
	case unix.ENOTCONN:
		return errnoNotConn
	case unix.ENOTSOCK:
		return errnoNotSock
	case unix.EOPNOTSUPP:
		return errnoNotSup
	case unix.EPIPE:
		return 64
	case unix.ETIMEDOUT:
		return 73
	case unix.ENETDOWN:
		return 38
	case unix.ENETUNREACH:
		return 40
	case unix.EHOSTUNREACH:
		return 23
	}
	return errnoIO
}

// socketCall answers a WASI call on one of the instance's sockets. Its
// i32 parameters are the low 32 bits of stack's values: wazero leaves
// the upper ones as they were.
type socketCall func(s *sockets, mod api.Module, num int32, f *sockFile, stack []uint64) uint16

// socketCalls are the WASI functions the runtime answers for sockets;
// for other descriptors they are wazero's (fd_write with mounts.go's
// ENOSPC wrapper).
var socketCalls = map[string]socketCall{
	"sock_accept": func(s *sockets, mod api.Module, _ int32, f *sockFile, stack []uint64) uint16 {
		num, errno := s.accept(f, uint16(stack[1]))
		if errno == 0 && !mod.Memory().WriteUint32Le(uint32(stack[2]), uint32(num)) {
			_ = s.closeFD(num, s.files[num])
			return errnoFault
		}
		return errno
	},
	"sock_recv": func(s *sockets, mod api.Module, _ int32, f *sockFile, stack []uint64) uint16 {
		mem := mod.Memory()
		bufs, ok := s.iovecs(mem, uint32(stack[1]), uint32(stack[2]))
		if !ok {
			return errnoFault
		}
		var flags int
		riFlags := uint16(stack[3])
		if riFlags&recvPeek != 0 {
			flags |= unix.MSG_PEEK
		}
		if riFlags&recvWaitall != 0 {
			flags |= unix.MSG_WAITALL
		}
		if riFlags&^(recvPeek|recvWaitall) != 0 {
			return errnoInval
		}
		n, errno := s.recv(f, bufs, flags)
		if errno != 0 {
			return errno
		}
		if !mem.WriteUint32Le(uint32(stack[4]), uint32(n)) || !mem.WriteUint16Le(uint32(stack[5]), 0) {
			return errnoFault
		}
		return 0
	},
	"sock_send": func(s *sockets, mod api.Module, _ int32, f *sockFile, stack []uint64) uint16 {
		mem := mod.Memory()
		bufs, ok := s.iovecs(mem, uint32(stack[1]), uint32(stack[2]))
		if !ok {
			return errnoFault
		}
		if uint16(stack[3]) != 0 {
			return errnoInval // WASI defines no send flags
		}
		n, errno := s.send(f, bufs)
		if errno == 0 && !mem.WriteUint32Le(uint32(stack[4]), uint32(n)) {
			return errnoFault
		}
		return errno
	},
	"sock_shutdown": func(_ *sockets, _ api.Module, _ int32, f *sockFile, stack []uint64) uint16 {
		var how int
		switch uint8(stack[1]) {
		case 1:
			how = unix.SHUT_RD
		case 2:
			how = unix.SHUT_WR
		case 3:
			how = unix.SHUT_RDWR
		default:
			return errnoInval
		}
		if err := unix.Shutdown(f.fd, how); err != nil {
			return wasiErrno(err)
		}
		return 0
	},
	"fd_read": func(s *sockets, mod api.Module, _ int32, f *sockFile, stack []uint64) uint16 {
		mem := mod.Memory()
		bufs, ok := s.iovecs(mem, uint32(stack[1]), uint32(stack[2]))
		if !ok {
			return errnoFault
		}
		n, errno := s.recv(f, bufs, 0)
		if errno == 0 && !mem.WriteUint32Le(uint32(stack[3]), uint32(n)) {
			return errnoFault
		}
		return errno
	},
	"fd_write": func(s *sockets, mod api.Module, _ int32, f *sockFile, stack []uint64) uint16 {
		mem := mod.Memory()
		bufs, ok := s.iovecs(mem, uint32(stack[1]), uint32(stack[2]))
		if !ok {
			return errnoFault
		}
		n, errno := s.send(f, bufs)
		if errno == 0 && !mem.WriteUint32Le(uint32(stack[3]), uint32(n)) {
			return errnoFault
		}
		return errno
	},
	"fd_close": func(s *sockets, _ api.Module, num int32, f *sockFile, _ []uint64) uint16 {
		return s.closeFD(num, f)
	},
	"fd_fdstat_get": func(_ *sockets, mod api.Module, _ int32, f *sockFile, stack []uint64) uint16 {
		var st [24]byte
		st[0] = filetypeSocketStream
		if f.nonblock {
			binary.LittleEndian.PutUint16(st[2:], fdflagNonblock)
		}
		binary.LittleEndian.PutUint64(st[8:], socketRights)
		if !mod.Memory().Write(uint32(stack[1]), st[:]) {
			return errnoFault
		}
		return 0
	},
	"fd_fdstat_set_flags": func(_ *sockets, _ api.Module, _ int32, f *sockFile, stack []uint64) uint16 {
		flags := uint16(stack[1])
		if flags&^fdflagNonblock != 0 {
			return errnoNotSup // append and the sync flags mean nothing to a socket
		}
		f.nonblock = flags&fdflagNonblock != 0
		return 0
	},
	"fd_filestat_get": func(_ *sockets, mod api.Module, _ int32, _ *sockFile, stack []uint64) uint16 {
		var st [64]byte
		st[16] = filetypeSocketStream
		if !mod.Memory().Write(uint32(stack[1]), st[:]) {
			return errnoFault
		}
		return 0
	},
	// A socket is no preopened directory: wasi-libc and Go stop looking
	// for directories at the first EBADF, which the listeners, numbered
	// after the directories, give.
	"fd_prestat_get":        fixedErrno(errnoBadf),
	"fd_prestat_dir_name":   fixedErrno(errnoBadf),
	"fd_renumber":           fixedErrno(errnoNotSup),
	"fd_seek":               fixedErrno(errnoSpipe),
	"fd_tell":               fixedErrno(errnoSpipe),
	"fd_pread":              fixedErrno(errnoSpipe),
	"fd_pwrite":             fixedErrno(errnoSpipe),
	"fd_advise":             fixedErrno(errnoSpipe),
	"fd_allocate":           fixedErrno(errnoSpipe),
	"fd_readdir":            fixedErrno(errnoNotDir),
	"fd_sync":               fixedErrno(errnoInval),
	"fd_datasync":           fixedErrno(errnoInval),
	"fd_filestat_set_size":  fixedErrno(errnoInval),
	"fd_filestat_set_times": fixedErrno(errnoInval),
	"path_open":             fixedErrno(errnoNotDir),
}

func fixedErrno(errno uint16) socketCall {
	return func(*sockets, api.Module, int32, *sockFile, []uint64) uint16 { return errno }
}

// exportSocketFunctions overrides, in b, the WASI functions of
// socketCalls: a call on a socket is answered by the instance's table, any
// other by wazero's function (defs), wrapped for files as
// exportNoSpaceWrappers does (mounts.go).
func exportSocketFunctions(b wazero.HostModuleBuilder, defs map[string]wasiFunc) error {
	for name, call := range socketCalls {
		def, ok := defs[name]
		if !ok {
			return fmt.Errorf("wazero's WASI has no %s", name)
		}
		next, ok := def.fn.(api.GoModuleFunction)
		if !ok {
			return fmt.Errorf("wazero's WASI %s is not a Go module function", name)
		}
		if wrap, ok := fileWrappers[name]; ok {
			next = wrap(next) // as exportNoSpaceWrappers exported it
		}
		def.export(b, name, socketFunc(name, call, next))
	}
	return nil
}

// socketFunc dispatches a WASI call on its first parameter, a descriptor
// (fd_renumber: either of its two).
func socketFunc(name string, call socketCall, next api.GoModuleFunction) api.GoModuleFunction {
	return api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
		if s := guestOf(ctx).socks; s != nil {
			num := int32(stack[0])
			f := s.files[num]
			if f == nil && name == "fd_renumber" {
				f = s.files[int32(stack[1])]
			}
			if f != nil {
				stack[0] = uint64(call(s, mod, num, f, stack))
				return
			}
		}
		next.Call(ctx, mod, stack)
	})
}
