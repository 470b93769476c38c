//go:build unix

package wasmrt

import "golang.org/x/sys/unix"

// executableMemory says whether a page can be mapped and made executable,
// as the compiler's code needs (a hardened kernel may refuse it).
func executableMemory() bool {
	seg, err := unix.Mmap(-1, 0, unix.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		return false
	}
	defer func() { _ = unix.Munmap(seg) }()
	return unix.Mprotect(seg, unix.PROT_READ|unix.PROT_EXEC) == nil
}
