package disktest

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/wasmorch/wasmorch/internal/diskspace"
)

func TestFillLeavesAFullFilesystem(t *testing.T) {
	dir := Tmpfs(t, 4<<20)
	Fill(t, dir, 0)
	err := os.WriteFile(filepath.Join(dir, "more"), make([]byte, 64<<10), 0o644)
	if !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("writing to a filled tmpfs: %v, want ENOSPC", err)
	}
	Unfill(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "more"), make([]byte, 64<<10), 0o644); err != nil {
		t.Fatalf("writing after Unfill: %v", err)
	}
	Fill(t, dir, 1<<20)
	s, err := diskspace.Of(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.Free > 1<<20 || s.Free < 512<<10 {
		t.Fatalf("after Fill(leave 1 MiB): %d bytes free", s.Free)
	}
}
