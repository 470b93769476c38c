//go:build !linux

package wasmrt

import (
	experimentalsys "github.com/tetratelabs/wazero/experimental/sys"
	"github.com/tetratelabs/wazero/experimental/sysfs"
)

// writableFS is the file system of a writable mount of dir. Where there is
// no openat2 (mounts_linux.go), it is wazero's DirFS that refuses to make
// symbolic links: DirFS refuses an absolute target, but follows a relative
// one wherever it leads, so a guest could link "../../.." in its writable
// directory and read the host's files through it.
func writableFS(dir string) experimentalsys.FS {
	return noSymlinkFS{sysfs.DirFS(dir)}
}

// noSymlinkFS refuses to create symbolic links (EPERM). Links that are
// there already (in a host directory an operator allowed) are the
// operator's.
type noSymlinkFS struct{ experimentalsys.FS }

// Symlink implements experimentalsys.FS.
func (noSymlinkFS) Symlink(_, _ string) experimentalsys.Errno { return experimentalsys.EPERM }
