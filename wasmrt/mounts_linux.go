package wasmrt

import (
	"io/fs"
	"os"
	"path"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
	"github.com/tetratelabs/wazero/sys"
)

// On Linux a writable mount is a beneathFS: the guest may make symbolic
// links, and every path it names is resolved by the kernel with openat2's
// RESOLVE_BENEATH from the mount's directory, so that no link, whoever
// made it and wherever it was moved, takes a lookup out of the directory
// (EPERM, as wazero answers a path with "..", where WASI says
// ENOTCAPABLE). wazero's DirFS joins the guest's path to the directory and
// lets the kernel follow links wherever they lead.
//
// What is resolved is handed to wazero's own DirFS through the
// /proc/self/fd link of the descriptor openat2 returned, which the kernel
// follows to that very file or directory without looking its path up
// again: wazero's files, errors and semantics stay as they are, for paths
// that stay inside.

// writableFS is the file system of a writable mount of dir.
func writableFS(dir string) experimentalsys.FS {
	return &beneathFS{dir: dir}
}

// beneathFS is a directory whose paths are resolved beneath it.
type beneathFS struct {
	experimentalsys.UnimplementedFS
	dir string

	// root is a descriptor of dir (O_PATH) that lookups start from, opened
	// at the first and closed when the beneathFS is garbage: the file
	// system has no Close, and wazero keeps it as long as the instance.
	rootOnce sync.Once
	root     int
	rootErr  error
}

// rootFD is the descriptor of the directory.
func (b *beneathFS) rootFD() (int, experimentalsys.Errno) {
	b.rootOnce.Do(func() {
		b.root, b.rootErr = unix.Open(b.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if b.rootErr == nil {
			runtime.AddCleanup(b, func(fd int) { unix.Close(fd) }, b.root)
		}
	})
	return b.root, experimentalsys.UnwrapOSError(b.rootErr)
}

// String implements fmt.Stringer, as wazero's DirFS does.
func (b *beneathFS) String() string { return b.dir }

// resolveFlags: nothing above the directory, no absolute link, no
// /proc/self/fd link.
const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS

// open opens name (a path as wazero gives it: relative, clean, perhaps with
// a trailing slash) beneath the directory with how.
func (b *beneathFS) open(name string, how *unix.OpenHow) (*os.File, experimentalsys.Errno) {
	root, errno := b.rootFD()
	if errno != 0 {
		return nil, errno
	}
	if name = strings.TrimLeft(name, "/"); name == "" {
		name = "."
	}
	how.Resolve = resolveFlags
	how.Flags |= unix.O_CLOEXEC
	for {
		fd, err := unix.Openat2(root, name, how)
		switch err {
		case nil:
			return os.NewFile(uintptr(fd), name), 0
		case unix.EINTR:
			continue
		case unix.EXDEV: // out of the directory
			return nil, experimentalsys.EPERM
		case unix.EAGAIN: // a rename raced the lookup (RESOLVE_BENEATH checks for it)
			continue
		}
		return nil, experimentalsys.UnwrapOSError(err)
	}
}

// procPath is the /proc/self/fd link of f.
func procPath(f *os.File) string {
	return "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
}

// split splits name into its directory and last element, keeping a
// trailing slash with the element ("a/b/" is "a" and "b/"). A leading slash
// is not the host's root: wazero names a file under a directory the guest
// opened as "DIR/NAME", and the mount's root directory is "".
func split(name string) (dir, elem string) {
	name = strings.TrimLeft(name, "/")
	trimmed := strings.TrimSuffix(name, "/")
	dir, elem = path.Split(trimmed)
	if elem == "" {
		elem = "."
	}
	if trimmed != name {
		elem += "/"
	}
	return dir, elem
}

// inParent runs fn with wazero's DirFS of the directory that holds name's
// last element, resolved beneath the mount, and that element: fn does not
// follow the element if it is a link, so nothing it does leaves the mount.
func (b *beneathFS) inParent(name string, fn func(parent experimentalsys.FS, elem string) experimentalsys.Errno) experimentalsys.Errno {
	dir, elem := split(name)
	if elem == "." || elem == "./" {
		return fn(sysfs.DirFS(b.dir), ".")
	}
	d, errno := b.open(dir, &unix.OpenHow{Flags: unix.O_PATH | unix.O_DIRECTORY})
	if errno != 0 {
		return errno
	}
	defer d.Close()
	return fn(sysfs.DirFS(procPath(d)), elem)
}

// resolved runs fn with the /proc/self/fd link of name itself, links
// followed beneath the mount.
func (b *beneathFS) resolved(name string, fn func(p string) experimentalsys.Errno) experimentalsys.Errno {
	f, errno := b.open(name, &unix.OpenHow{Flags: unix.O_PATH})
	if errno != 0 {
		return errno
	}
	defer f.Close()
	return fn(procPath(f))
}

// OpenFile implements experimentalsys.FS: openat2 opens (and creates or
// truncates) the file beneath the mount, and wazero's file is opened
// again through its /proc/self/fd link, which stays open as long as it.
func (b *beneathFS) OpenFile(name string, flag experimentalsys.Oflag, perm fs.FileMode) (experimentalsys.File, experimentalsys.Errno) {
	how := &unix.OpenHow{Flags: uint64(osOpenFlags(flag))}
	if flag&experimentalsys.O_CREAT != 0 {
		how.Mode = uint64(perm.Perm()) // openat2 refuses a mode without O_CREAT
	}
	anchor, errno := b.open(name, how)
	if errno != 0 {
		return nil, errno
	}
	again := flag &^ (experimentalsys.O_CREAT | experimentalsys.O_EXCL | experimentalsys.O_TRUNC | experimentalsys.O_NOFOLLOW)
	f, errno := sysfs.DirFS(procPath(anchor)).OpenFile(".", again, perm)
	if errno != 0 {
		anchor.Close()
		return nil, errno
	}
	return &beneathFile{File: f, anchor: anchor}, 0
}

// osOpenFlags is flag as open(2)'s flags, as wazero's DirFS opens it.
func osOpenFlags(flag experimentalsys.Oflag) int {
	var f int
	switch flag & (experimentalsys.O_RDONLY | experimentalsys.O_RDWR | experimentalsys.O_WRONLY) {
	case experimentalsys.O_RDWR:
		f = unix.O_RDWR
	case experimentalsys.O_WRONLY:
		f = unix.O_WRONLY
	default:
		f = unix.O_RDONLY
	}
	for _, m := range []struct {
		sys experimentalsys.Oflag
		os  int
	}{
		{experimentalsys.O_APPEND, unix.O_APPEND},
		{experimentalsys.O_CREAT, unix.O_CREAT},
		{experimentalsys.O_EXCL, unix.O_EXCL},
		{experimentalsys.O_SYNC, unix.O_SYNC},
		{experimentalsys.O_TRUNC, unix.O_TRUNC},
		{experimentalsys.O_DIRECTORY, unix.O_DIRECTORY},
		{experimentalsys.O_DSYNC, unix.O_DSYNC},
		{experimentalsys.O_NOFOLLOW, unix.O_NOFOLLOW},
		{experimentalsys.O_NONBLOCK, unix.O_NONBLOCK},
		{experimentalsys.O_RSYNC, unix.O_RSYNC},
	} {
		if flag&m.sys != 0 {
			f |= m.os
		}
	}
	return f
}

// beneathFile is a file of a beneathFS: wazero's, and the descriptor
// openat2 opened, which wazero's reopens a directory through.
type beneathFile struct {
	experimentalsys.File
	anchor *os.File
}

// Pwrite implements experimentalsys.File. wazero's fails on a file opened
// with O_APPEND (Go's os.File.WriteAt refuses one); this writes with
// pwrite(2), which on Linux appends there, as WASI allows.
func (f *beneathFile) Pwrite(buf []byte, off int64) (int, experimentalsys.Errno) {
	if !f.File.IsAppend() || len(buf) == 0 {
		return f.File.Pwrite(buf, off)
	}
	if off < 0 {
		return 0, experimentalsys.EINVAL
	}
	for {
		n, err := unix.Pwrite(int(f.anchor.Fd()), buf, off)
		if err == unix.EINTR {
			continue
		}
		return max(n, 0), experimentalsys.UnwrapOSError(err)
	}
}

// Close implements experimentalsys.File.
func (f *beneathFile) Close() experimentalsys.Errno {
	errno := f.File.Close()
	if err := f.anchor.Close(); errno == 0 {
		errno = experimentalsys.UnwrapOSError(err)
	}
	return errno
}

// Lstat implements experimentalsys.FS.
func (b *beneathFS) Lstat(name string) (st sys.Stat_t, errno experimentalsys.Errno) {
	errno = b.inParent(name, func(p experimentalsys.FS, elem string) (e experimentalsys.Errno) {
		st, e = p.Lstat(elem)
		return e
	})
	return st, errno
}

// Stat implements experimentalsys.FS: fstat of the file resolved, as
// wazero's DirFS makes its Stat_t of os.Stat.
func (b *beneathFS) Stat(name string) (sys.Stat_t, experimentalsys.Errno) {
	f, errno := b.open(name, &unix.OpenHow{Flags: unix.O_PATH})
	if errno != 0 {
		return sys.Stat_t{}, errno
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return sys.Stat_t{}, experimentalsys.UnwrapOSError(err)
	}
	return sys.NewStat_t(info), 0
}

// Mkdir implements experimentalsys.FS.
func (b *beneathFS) Mkdir(name string, perm fs.FileMode) experimentalsys.Errno {
	return b.inParent(name, func(p experimentalsys.FS, elem string) experimentalsys.Errno { return p.Mkdir(elem, perm) })
}

// Chmod implements experimentalsys.FS.
func (b *beneathFS) Chmod(name string, perm fs.FileMode) experimentalsys.Errno {
	return b.resolved(name, func(p string) experimentalsys.Errno { return sysfs.DirFS(p).Chmod(".", perm) })
}

// Rename implements experimentalsys.FS.
func (b *beneathFS) Rename(from, to string) experimentalsys.Errno {
	return b.inParent(from, func(pf experimentalsys.FS, ef string) experimentalsys.Errno {
		return b.inParent(to, func(pt experimentalsys.FS, et string) experimentalsys.Errno {
			return sysfs.DirFS("/").Rename(joinFS(pf, ef), joinFS(pt, et))
		})
	})
}

// Rmdir implements experimentalsys.FS.
func (b *beneathFS) Rmdir(name string) experimentalsys.Errno {
	return b.inParent(name, func(p experimentalsys.FS, elem string) experimentalsys.Errno { return p.Rmdir(elem) })
}

// Unlink implements experimentalsys.FS.
func (b *beneathFS) Unlink(name string) experimentalsys.Errno {
	return b.inParent(name, func(p experimentalsys.FS, elem string) experimentalsys.Errno { return p.Unlink(elem) })
}

// Link implements experimentalsys.FS: the old name's last element is not
// followed (link(2) does not).
func (b *beneathFS) Link(oldName, newName string) experimentalsys.Errno {
	return b.inParent(oldName, func(po experimentalsys.FS, eo string) experimentalsys.Errno {
		return b.inParent(newName, func(pn experimentalsys.FS, en string) experimentalsys.Errno {
			return sysfs.DirFS("/").Link(joinFS(po, eo), joinFS(pn, en))
		})
	})
}

// Symlink implements experimentalsys.FS: a link may point anywhere but to
// an absolute path (EPERM, as wazero's DirFS); following it is what is
// kept beneath the mount.
func (b *beneathFS) Symlink(target, link string) experimentalsys.Errno {
	return b.inParent(link, func(p experimentalsys.FS, elem string) experimentalsys.Errno { return p.Symlink(target, elem) })
}

// Readlink implements experimentalsys.FS.
func (b *beneathFS) Readlink(name string) (target string, errno experimentalsys.Errno) {
	errno = b.inParent(name, func(p experimentalsys.FS, elem string) (e experimentalsys.Errno) {
		target, e = p.Readlink(elem)
		return e
	})
	return target, errno
}

// Utimens implements experimentalsys.FS.
func (b *beneathFS) Utimens(name string, atim, mtim int64) experimentalsys.Errno {
	return b.resolved(name, func(p string) experimentalsys.Errno { return sysfs.DirFS(p).Utimens(".", atim, mtim) })
}

// joinFS is the host path of elem in p, a DirFS of a /proc/self/fd link,
// relative to "/" (for DirFS("/")).
func joinFS(p experimentalsys.FS, elem string) string {
	return strings.TrimPrefix(p.(interface{ String() string }).String(), "/") + "/" + elem
}
