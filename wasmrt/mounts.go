package wasmrt

import (
	"context"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// Writable mounts (state: an instance's scratch /tmp, volumes, writable
// host mounts) are host directories preopened with writableFS: on Linux
// wazero's sysfs.DirFS reached through paths resolved beneath the
// directory (mounts_linux.go), elsewhere DirFS without symbolic links
// (mounts_other.go). Read-only ones are DirFS under sysfs.ReadFS. One with
// a limit is wrapped in a quotaFS, which keeps the bytes of the files
// under it within the limit: a write, pwrite or truncate that would take
// them past it fails with ENOSPC and leaves the node's disk alone. It
// bounds the names under it as well (files, directories, links, each hard
// link too: namesFor), so that a guest cannot fill the node's inode table
// or a directory with millions of empty files: creating one more fails
// with ENOSPC, as a file system out of inodes does.
//
// wazero's sys.Errno has no ENOSPC, so the quotaFS returns EIO and raises
// the instance's noSpace flag; the runtime's WASI module wraps the calls
// that write or create (fd_write, fd_pwrite, fd_filestat_set_size,
// path_open, path_create_directory, path_symlink, path_link) and turns that
// EIO into WASI's ENOSPC (errnoNoSpace).

// errnoNoSpace and errnoIO are WASI preview 1's ENOSPC and EIO.
const (
	errnoNoSpace = 51
	errnoIO      = 29
)

// fsState is what an instance's file systems tell its WASI calls; it
// travels in the context of its _start call.
type fsState struct {
	noSpace atomic.Bool // a write was refused for want of space
}

type fsStateKey struct{}

func withFSState(ctx context.Context, st *fsState) context.Context {
	return context.WithValue(ctx, fsStateKey{}, st)
}

// wrapNoSpace returns a WASI function that calls orig and reports ENOSPC
// where orig failed with EIO because a quotaFS refused the write.
func wrapNoSpace(orig api.GoModuleFunction) api.GoModuleFunction {
	return api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
		st, _ := ctx.Value(fsStateKey{}).(*fsState)
		if st != nil {
			st.noSpace.Store(false)
		}
		orig.Call(ctx, mod, stack)
		if st != nil && stack[0] == errnoIO && st.noSpace.Load() {
			stack[0] = errnoNoSpace
		}
	})
}

// errnoInval is WASI preview 1's EINVAL; lookupSymlinkFollow its
// lookupflags bit that follows a symbolic link.
const (
	errnoInval          = 28
	lookupSymlinkFollow = 1
)

// linkNoFollow returns path_link as wazero's (orig), which links the old
// path itself even when the guest asks to follow it if it is a symbolic
// link (SYMLINK_FOLLOW, linkat's AT_SYMLINK_FOLLOW), except that it refuses
// that flag with EINVAL rather than do what was not asked, as wasmtime
// does. wasi-libc's link(), Go's os.Link and Rust's fs::hard_link do not
// set it.
func linkNoFollow(orig api.GoModuleFunction) api.GoModuleFunction {
	return api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
		if uint32(stack[1])&lookupSymlinkFollow != 0 {
			stack[0] = errnoInval
			return
		}
		orig.Call(ctx, mod, stack)
	})
}

// errnoRange is WASI preview 1's ERANGE; maxLinkLen the longest link
// target there is (Linux's PATH_MAX).
const (
	errnoRange = 68
	maxLinkLen = 4096
)

// readlinkTruncates returns path_readlink as wazero's (orig), except that
// a buffer shorter than the link gets its first bytes, as WASI (and
// readlink(2)) have it, where wazero's fails with ERANGE. wazero's
// file-system interface gives the whole target only, and its WASI module
// keeps the file table to itself, so on ERANGE orig is called again with
// the guest's buffer made long enough out of the memory that follows it,
// which is put back as it was before the guest runs again: a WASI preview
// 1 guest has one thread, and its memory is its own.
func readlinkTruncates(orig api.GoModuleFunction) api.GoModuleFunction {
	return api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
		params := [6]uint64(stack[:6])
		orig.Call(ctx, mod, stack)
		if stack[0] != errnoRange {
			return
		}
		mem := mod.Memory()
		buf, bufLen, resultBufused := uint32(params[3]), uint32(params[4]), uint32(params[5])
		long := min(uint64(bufLen)+maxLinkLen, uint64(mem.Size())-uint64(min(buf, mem.Size())), math.MaxUint32)
		if long <= uint64(bufLen) {
			return // nothing follows the buffer: ERANGE stands
		}
		after, ok := mem.Read(buf+bufLen, uint32(long)-bufLen)
		if !ok {
			return
		}
		saved := append([]byte(nil), after...)
		copy(stack, params[:])
		stack[4] = long
		orig.Call(ctx, mod, stack)
		used, _ := mem.ReadUint32Le(resultBufused)
		mem.Write(buf+bufLen, saved)
		if stack[0] != 0 {
			return // ERANGE still (a target longer than PATH_MAX), or another error
		}
		if !mem.WriteUint32Le(resultBufused, min(used, bufLen)) {
			stack[0] = errnoFault
		}
	})
}

// fileWrappers wrap wazero's WASI functions of these names for writable
// mounts (sock_wasi_linux.go wraps the same around its own).
var fileWrappers = map[string]func(api.GoModuleFunction) api.GoModuleFunction{
	"fd_write": wrapNoSpace, "fd_pwrite": wrapNoSpace, "fd_filestat_set_size": wrapNoSpace,
	"path_open": wrapNoSpace, "path_create_directory": wrapNoSpace, "path_symlink": wrapNoSpace,
	"path_link":     func(fn api.GoModuleFunction) api.GoModuleFunction { return linkNoFollow(wrapNoSpace(fn)) },
	"path_readlink": readlinkTruncates,
}

// exportNoSpaceWrappers overrides, in b, the WASI functions that write to
// files or create them with wrapNoSpace of wazero's own (defs), and
// path_link with linkNoFollow too.
func exportNoSpaceWrappers(b wazero.HostModuleBuilder, defs map[string]wasiFunc) {
	for name, wrap := range fileWrappers {
		def := defs[name]
		fn, ok := def.fn.(api.GoModuleFunction)
		if !ok {
			continue // not wazero's usual kind of host function: left as is
		}
		def.export(b, name, wrap(fn))
	}
}

// fsConfig preopens an instance's read-only files (filesConfig) and its
// writable mounts.
func fsConfig(files map[string][]byte, mounts []runtimeapi.Mount, st *fsState) (wazero.FSConfig, error) {
	cfg := filesConfig(files)
	for _, m := range mounts {
		if m.ReadOnly {
			// Resolved beneath its directory too: another workload may
			// mount the same directory writable and make a link there
			// that leads out of it.
			cfg = cfg.(sysfs.FSConfig).WithSysFSMount(&sysfs.ReadFS{FS: writableFS(m.HostPath)}, m.GuestPath)
			continue
		}
		fsys := writableFS(m.HostPath)
		if m.LimitBytes > 0 {
			used, names, err := diskUsage(m.HostPath)
			if err != nil {
				return nil, err
			}
			q := &quota{limit: m.LimitBytes, used: used, maxNames: namesFor(m.LimitBytes), names: names}
			fsys = &quotaFS{FS: fsys, q: q, st: st}
		}
		cfg = cfg.(sysfs.FSConfig).WithSysFSMount(fsys, m.GuestPath)
	}
	return cfg, nil
}

// bytesPerName and minNames make namesFor: one name per 16 KiB of a
// mount's size (mke2fs's default bytes-per-inode), and at least 1,024.
const (
	bytesPerName = 16 << 10
	minNames     = 1024
)

// namesFor is how many names (files, directories, links; each hard link is
// a name) a mount of limit bytes may hold.
func namesFor(limit int64) int64 { return max(limit/bytesPerName, minNames) }

// diskUsage is what the quota of dir starts from: the bytes of the regular
// files under it, each file once however many links it has, and the names
// under it.
func diskUsage(dir string) (used, names int64, err error) {
	seen := map[uint64]bool{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			names++
		}
		if !d.Type().IsRegular() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if ino := inodeOf(info); ino != 0 {
			if seen[ino] {
				return nil
			}
			seen[ino] = true
		}
		used += info.Size()
		return nil
	})
	return used, names, err
}

// quota is the bytes the files of one mount may have and have, and the
// names.
type quota struct {
	mu              sync.Mutex
	limit, used     int64
	maxNames, names int64
}

// newName reports whether one more name fits; q.mu is held.
func (q *quota) newName() bool { return q.names < q.maxNames }

// quotaFS is a file system whose files' bytes are kept within a quota.
type quotaFS struct {
	experimentalsys.FS
	q  *quota
	st *fsState
}

// full reports a write refused for want of space.
func (f *quotaFS) full() experimentalsys.Errno {
	if f.st != nil {
		f.st.noSpace.Store(true)
	}
	return experimentalsys.EIO
}

// OpenFile implements experimentalsys.FS: what O_TRUNC frees is given back,
// and a file O_CREAT creates is a name (where the path is a link that
// dangles, the file created is its target).
func (f *quotaFS) OpenFile(path string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	f.q.mu.Lock()
	defer f.q.mu.Unlock()
	var freed int64
	creates := false
	if flag&(experimentalsys.O_TRUNC|experimentalsys.O_CREAT) != 0 {
		st, errno := f.FS.Stat(path)
		if errno == 0 && st.Mode.IsRegular() && flag&experimentalsys.O_TRUNC != 0 {
			freed = st.Size
		}
		creates = errno == experimentalsys.ENOENT && flag&experimentalsys.O_CREAT != 0
	}
	if creates && !f.q.newName() {
		return nil, f.full()
	}
	file, errno := f.FS.OpenFile(path, flag, perm)
	if errno != 0 {
		return nil, errno
	}
	f.q.used -= freed
	if creates {
		f.q.names++
	}
	return &quotaFile{File: file, fs: f}, 0
}

// Mkdir implements experimentalsys.FS: a directory is a name.
func (f *quotaFS) Mkdir(path string, perm fs.FileMode) experimentalsys.Errno {
	return f.create(func() experimentalsys.Errno { return f.FS.Mkdir(path, perm) })
}

// Symlink implements experimentalsys.FS: a link is a name.
func (f *quotaFS) Symlink(target, link string) experimentalsys.Errno {
	return f.create(func() experimentalsys.Errno { return f.FS.Symlink(target, link) })
}

// Link implements experimentalsys.FS: a hard link is a name.
func (f *quotaFS) Link(oldPath, newPath string) experimentalsys.Errno {
	return f.create(func() experimentalsys.Errno { return f.FS.Link(oldPath, newPath) })
}

// create makes one name with fn, if it fits.
func (f *quotaFS) create(fn func() experimentalsys.Errno) experimentalsys.Errno {
	f.q.mu.Lock()
	defer f.q.mu.Unlock()
	if !f.q.newName() {
		return f.full()
	}
	if errno := fn(); errno != 0 {
		return errno
	}
	f.q.names++
	return 0
}

// Rmdir implements experimentalsys.FS: the directory's name is given back.
func (f *quotaFS) Rmdir(path string) experimentalsys.Errno {
	f.q.mu.Lock()
	defer f.q.mu.Unlock()
	if errno := f.FS.Rmdir(path); errno != 0 {
		return errno
	}
	f.q.names--
	return 0
}

// Unlink implements experimentalsys.FS: a file's last link frees its bytes.
func (f *quotaFS) Unlink(path string) experimentalsys.Errno {
	f.q.mu.Lock()
	defer f.q.mu.Unlock()
	st, statErr := f.FS.Lstat(path)
	if errno := f.FS.Unlink(path); errno != 0 {
		return errno
	}
	f.q.names--
	if statErr == 0 && st.Mode.IsRegular() && st.Nlink <= 1 {
		f.q.used -= st.Size
	}
	return 0
}

// Rename implements experimentalsys.FS: a file replaced frees its bytes
// and its name.
func (f *quotaFS) Rename(from, to string) experimentalsys.Errno {
	f.q.mu.Lock()
	defer f.q.mu.Unlock()
	src, srcErr := f.FS.Lstat(from)
	dst, dstErr := f.FS.Lstat(to)
	if errno := f.FS.Rename(from, to); errno != 0 {
		return errno
	}
	if srcErr == 0 && dstErr == 0 && dst.Ino != src.Ino {
		f.q.names-- // the name replaced
		if dst.Mode.IsRegular() && dst.Nlink <= 1 {
			f.q.used -= dst.Size
		}
	}
	return 0
}

// quotaFile is a file of a quotaFS.
type quotaFile struct {
	experimentalsys.File
	fs *quotaFS
}

// Write implements experimentalsys.File.
func (f *quotaFile) Write(buf []byte) (int, experimentalsys.Errno) {
	return f.write(buf, -1)
}

// Pwrite implements experimentalsys.File.
func (f *quotaFile) Pwrite(buf []byte, off int64) (int, experimentalsys.Errno) {
	return f.write(buf, off)
}

// write writes buf at off (-1: at the file's offset), or the part of it
// that fits (a short write, after which the next one fails with ENOSPC).
func (f *quotaFile) write(buf []byte, off int64) (int, experimentalsys.Errno) {
	if len(buf) == 0 {
		if off < 0 {
			return f.File.Write(buf)
		}
		return f.File.Pwrite(buf, off)
	}
	q := f.fs.q
	q.mu.Lock()
	defer q.mu.Unlock()
	st, errno := f.File.Stat()
	if errno != 0 {
		return 0, errno
	}
	pos := off
	switch {
	case f.File.IsAppend(): // pwrite too appends (Linux; beneathFile)
		pos = st.Size
	case pos >= 0:
	default:
		if pos, errno = f.File.Seek(0, io.SeekCurrent); errno != 0 {
			return 0, errno
		}
	}
	if end := pos + int64(len(buf)); end > st.Size {
		room := q.limit - q.used
		if end-st.Size > room {
			fits := st.Size + room - pos
			if fits <= 0 {
				return 0, f.fs.full()
			}
			buf = buf[:fits]
		}
	}
	var n int
	if off < 0 {
		n, errno = f.File.Write(buf)
	} else {
		n, errno = f.File.Pwrite(buf, off)
	}
	if after, e := f.File.Stat(); e == 0 {
		q.used += after.Size - st.Size
	}
	return n, errno
}

// Truncate implements experimentalsys.File.
func (f *quotaFile) Truncate(size int64) experimentalsys.Errno {
	q := f.fs.q
	q.mu.Lock()
	defer q.mu.Unlock()
	st, errno := f.File.Stat()
	if errno != 0 {
		return errno
	}
	if grow := size - st.Size; grow > 0 && grow > q.limit-q.used {
		return f.fs.full()
	}
	if errno := f.File.Truncate(size); errno != 0 {
		return errno
	}
	q.used += size - st.Size
	return 0
}

// inodeOf is the inode number of info, or 0 where it is not known.
func inodeOf(info os.FileInfo) uint64 {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino)
	}
	return 0
}
