package wasmrt

import (
	"os"

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
