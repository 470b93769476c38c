package wasmrt

import (
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// imageFile is an empty file in memory for a memory image.
func imageFile() (*os.File, error) {
	fd, err := unix.MemfdCreate("wasmrt-memory-image", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "wasmrt-memory-image"), nil
}

// pagemap is /proc/self/pagemap, opened once; nil if it cannot be read.
var pagemap = sync.OnceValue(func() *os.File {
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		return nil
	}
	return f
})

// The bits of a pagemap entry (Documentation/admin-guide/mm/pagemap.rst).
const (
	pagePresent   = 1 << 63
	pageSwapped   = 1 << 62
	pageFile      = 1 << 61 // a file's page (here: the image's), or shared anonymous
	pageExclusive = 1 << 56 // mapped by this process alone (since Linux 4.2)
)

// readPageFlags fills flags with the pagemap entries of the pages at addr,
// one per OS page; false if the kernel does not say.
func readPageFlags(addr unsafe.Pointer, flags []uint64) bool {
	f := pagemap()
	if f == nil || len(flags) == 0 {
		return false
	}
	buf := unsafe.Slice((*byte)(unsafe.Pointer(&flags[0])), len(flags)*8)
	n, err := f.ReadAt(buf, int64(uintptr(addr)/uintptr(osPage))*8)
	return err == nil && n == len(buf)
}
