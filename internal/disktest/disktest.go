// Package disktest gives tests a real filesystem that they can fill: a
// small tmpfs mounted for the test, so that a full disk is the kernel's
// ENOSPC and not an imitation of it. Mounting needs root (as the suite
// runs here and in CI); elsewhere the test is skipped and says why.
package disktest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wasmorch/wasmorch/internal/diskspace"
)

// fillName is the file Fill writes and Unfill removes.
const fillName = "disktest-fill"

// Tmpfs mounts a tmpfs of size bytes on a new directory and unmounts it
// when the test ends, or skips the test when this process may not mount.
func Tmpfs(tb testing.TB, size int64) string {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root to mount a small tmpfs that the test fills; skipped")
	}
	dir := tb.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		tb.Skipf("mounting a tmpfs is not allowed here (%v); skipped", err)
	}
	// Detached, so that a file something still holds open cannot keep the
	// mount (and the test's temporary directory) busy.
	tb.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// Fill writes a file in dir until its filesystem has at most leave bytes
// free (none with 0: the next write fails with ENOSPC).
func Fill(tb testing.TB, dir string, leave int64) {
	tb.Helper()
	f, err := os.OpenFile(filepath.Join(dir, fillName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		tb.Fatalf("disktest: %v", err)
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	for {
		s, err := diskspace.Of(dir)
		if err != nil {
			tb.Fatalf("disktest: %v", err)
		}
		over := s.Free - leave
		if over <= 0 {
			return
		}
		if _, err := f.Write(chunk[:min(over, int64(len(chunk)))]); err != nil {
			if errors.Is(err, unix.ENOSPC) {
				return
			}
			tb.Fatalf("disktest: %v", err)
		}
	}
}

// Unfill removes what Fill wrote in dir.
func Unfill(tb testing.TB, dir string) {
	tb.Helper()
	if err := os.Remove(filepath.Join(dir, fillName)); err != nil {
		tb.Fatalf("disktest: %v", err)
	}
}
