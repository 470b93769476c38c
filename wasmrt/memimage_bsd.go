//go:build unix && !linux

package wasmrt

import "os"

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
