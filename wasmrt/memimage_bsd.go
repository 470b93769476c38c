//go:build unix && !linux

package wasmrt

import (
	"os"
	"unsafe"
)

// imageFile is an empty file for a memory image: a temporary file,
// already unlinked, so that it goes when the last mapping does.
func imageFile() (*os.File, error) {
	f, err := os.CreateTemp("", "wasmrt-memory-image-*")
	if err != nil {
		return nil, err
	}
	if err := os.Remove(f.Name()); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// Page flags are Linux's: a reset compares the whole memory.
const (
	pagePresent = 1 << iota
	pageSwapped
	pageFile
	pageExclusive
)

func readPageFlags(unsafe.Pointer, []uint64) bool { return false }
