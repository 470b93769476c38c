package datadir

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestSecondHolderIsToldWhoHoldsIt: while one process holds a data dir,
// another's Acquire fails at once naming the holder's PID; once released,
// it succeeds. The other is a real second process (flock locks belong to
// open files, so one process locking twice would not show it).
func TestSecondHolderIsToldWhoHoldsIt(t *testing.T) {
	if dir := os.Getenv("DATADIR_CHILD"); dir != "" {
		_, err := Acquire(dir)
		fmt.Print(err)
		os.Exit(0)
	}
	dir := t.TempDir()
	l, err := Acquire(dir)
	if err != nil {
		t.Fatal(err)
	}
	second := func() string {
		cmd := exec.Command(os.Args[0], "-test.run", "^TestSecondHolderIsToldWhoHoldsIt$")
		cmd.Env = append(os.Environ(), "DATADIR_CHILD="+dir)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		return string(out)
	}
	if got, want := second(), fmt.Sprintf("is in use by process %d", os.Getpid()); !strings.Contains(got, want) {
		t.Errorf("while held: %q, want %q", got, want)
	}
	l.Release()
	l.Release()
	if got := second(); got != "<nil>" {
		t.Errorf("once released: %q", got)
	}
}
