// Package diskspace reads how much room the filesystem of a directory has
// left, for the checks that must act before a full disk does: a member
// refusing to start etcd, a worker reporting disk pressure.
package diskspace

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Space is what a filesystem holds, in bytes.
type Space struct {
	// Free is what an unprivileged process may still write (df's "Avail").
	Free int64
	// Size is the filesystem's whole size.
	Size int64
}

// Of returns the space of the filesystem that holds dir.
func Of(dir string) (Space, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return Space{}, fmt.Errorf("free space of %s: %w", dir, err)
	}
	// Bsize is an int32 on 32-bit ARM: widen both sides.
	return Space{Free: int64(st.Bavail) * int64(st.Bsize), Size: int64(st.Blocks) * int64(st.Bsize)}, nil
}

// Bytes writes n in the largest binary unit that keeps it readable:
// "512 KiB", "1.5 GiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	v := float64(n) / float64(div)
	suffix := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}[exp]
	if v >= 100 {
		return fmt.Sprintf("%.0f %s", v, suffix)
	}
	return strings.TrimSuffix(fmt.Sprintf("%.1f", v), ".0") + " " + suffix
}

// LowError is the error of a check that found too little free space.
type LowError struct {
	Dir   string
	Space Space
	Need  int64  // the free space asked for
	For   string // what needs it: "the embedded etcd"
}

func (e *LowError) Error() string {
	return fmt.Sprintf("the disk holding %s has %s free of %s, and %s needs at least %s",
		e.Dir, Bytes(e.Space.Free), Bytes(e.Space.Size), e.For, Bytes(e.Need))
}
