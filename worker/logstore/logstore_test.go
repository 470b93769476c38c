package logstore

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func newStore(t *testing.T, limit int64, maxOpen int) *Store {
	t.Helper()
	s, err := New(t.TempDir(), limit, maxOpen, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func diskBytes(t *testing.T, dir string) int64 {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
	}
	return total
}

func readAll(t *testing.T, l *Log, tail int64) []byte {
	t.Helper()
	b, err := l.Read(ReadOptions{TailBytes: tail})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOutputStaysWithinBoundAndKeepsTheNewest(t *testing.T) {
	const limit = 1 << 20
	s := newStore(t, limit, 0)
	l := s.Open("chatty-abcde")

	// 20 MiB of numbered lines in uneven writes, then one write larger than
	// the whole bound.
	var last bytes.Buffer
	written := 0
	for i := 0; written < 20<<20; i++ {
		line := fmt.Sprintf("line %08d %s\n", i, strings.Repeat("x", i%4000))
		if _, err := l.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		written += len(line)
		last.WriteString(line)
		if last.Len() > 2*limit {
			last.Next(last.Len() - limit)
		}
	}
	if got := diskBytes(t, s.dir); got > limit {
		t.Fatalf("on disk after 20 MiB: %d bytes, want <= %d", got, limit)
	}
	kept := readAll(t, l, 0)
	if int64(len(kept)) < limit/2 {
		t.Fatalf("kept %d bytes, want at least half the bound", len(kept))
	}
	if !bytes.HasSuffix(last.Bytes(), kept) {
		t.Fatalf("kept output is not the newest output")
	}
	tail := readAll(t, l, 100)
	if !bytes.Equal(tail, last.Bytes()[last.Len()-100:]) {
		t.Fatalf("tail 100 = %q, want the last 100 bytes written", tail)
	}

	huge := bytes.Repeat([]byte("y"), 3*limit)
	copy(huge[len(huge)-5:], "!end\n")
	if n, err := l.Write(huge); err != nil || n != len(huge) {
		t.Fatalf("Write(3 MiB) = %d, %v; want %d, nil", n, err, len(huge))
	}
	if got := diskBytes(t, s.dir); got > limit {
		t.Fatalf("on disk after a 3 MiB write: %d bytes, want <= %d", got, limit)
	}
	if got := readAll(t, l, 5); string(got) != "!end\n" {
		t.Fatalf("tail after huge write = %q", got)
	}
}

func TestOpenFilesStayBoundedAndReopenAppends(t *testing.T) {
	s := newStore(t, 1<<20, 4)
	const n = 20
	for round := range 3 {
		for i := range n {
			l := s.Open(fmt.Sprintf("inst-%02d", i))
			fmt.Fprintf(l, "round %d\n", round)
			if open := s.OpenFiles(); open > 4 {
				t.Fatalf("%d files open, want <= 4", open)
			}
		}
	}
	for i := range n {
		got := string(readAll(t, s.Get(fmt.Sprintf("inst-%02d", i)), 0))
		if want := "round 0\nround 1\nround 2\n"; got != want {
			t.Fatalf("inst-%02d kept %q, want %q", i, got, want)
		}
	}
}

// A store told 0 keeps open as many files as half the process's
// descriptor limit allows: 2,000 instances writing in turn keep their
// files open instead of reopening one at every line.
func TestDefaultOpenFilesFollowTheDescriptorLimit(t *testing.T) {
	const n = 2000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur < 2*n+100 {
		t.Skipf("the descriptor limit (%d) is too low to keep %d files open", lim.Cur, n)
	}
	s := newStore(t, 1<<20, 0)
	for round := range 2 {
		for i := range n {
			fmt.Fprintf(s.Open(fmt.Sprintf("inst-%04d", i)), "round %d\n", round)
		}
	}
	if open := s.OpenFiles(); open != n {
		t.Errorf("%d files open after %d instances wrote in turn, want all %d (descriptor limit %d)", open, n, n, lim.Cur)
	}
}

func TestOutputSurvivesANewStore(t *testing.T) {
	dir := t.TempDir()
	s1, err := New(dir, 1<<20, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(s1.Open("a"), "before\n")
	_ = s1.Close()

	s2, err := New(dir, 1<<20, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	l := s2.Open("a")
	fmt.Fprint(l, "after\n")
	if got := string(readAll(t, l, 0)); got != "before\nafter\n" {
		t.Fatalf("kept %q", got)
	}
}

func TestRemoveDeletesFilesAndDropsLaterWrites(t *testing.T) {
	s := newStore(t, 64, 0)
	l := s.Open("gone")
	for range 10 {
		fmt.Fprint(l, "0123456789") // Rotates: both files exist.
	}
	if err := s.Remove("gone"); err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(l, "late output")
	if got := diskBytes(t, s.dir); got != 0 {
		t.Fatalf("%d bytes left on disk after Remove", got)
	}
	if s.Get("gone") != nil {
		t.Fatal("Get after Remove returned a log")
	}
}

func TestRemoveUnknownKeepsHeldLogsOnly(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"old.log", "old.log.1", "kept.log", "unrelated.txt"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(dir, 1<<20, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Open("kept")
	if err := s.RemoveUnknown(); err != nil {
		t.Fatal(err)
	}
	var names []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, ","); got != "kept.log,unrelated.txt" {
		t.Fatalf("left %s", got)
	}
}

func TestIDsCannotEscapeTheDirectory(t *testing.T) {
	for _, id := range []string{"../../etc/passwd", "a/b", ".hidden", ""} {
		stem := fileStem(id)
		if strings.ContainsAny(stem, "/\\") || strings.HasPrefix(stem, ".") || stem == "" {
			t.Errorf("fileStem(%q) = %q", id, stem)
		}
	}
	if got := fileStem("hello-ab3de"); got != "hello-ab3de" {
		t.Errorf("fileStem of a plain id = %q, want it unchanged", got)
	}
}

// Many instances writing at once keep the open files within the bound:
// a writer never holds its log while it waits for the store, so the
// clock hand finds files to close (before, writers queued on the store's
// lock holding their logs, every eviction found them busy, and 10,000
// tickers held 10,000 files under a bound of 5,000).
func TestOpenFilesStayBoundedUnderConcurrentWriters(t *testing.T) {
	// One goroutine per instance, as a worker runs them.
	const maxOpen, writers, logsEach = 64, 1000, 1
	s := newStore(t, 1<<20, maxOpen)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for round := range 20 {
				for i := range logsEach {
					fmt.Fprintf(s.Open(fmt.Sprintf("w%02d-%02d", w, i)), "round %d\n", round)
				}
			}
		})
	}
	wg.Wait()
	// One more file opened with nobody writing: it evicts down to the bound.
	fmt.Fprintln(s.Open("last"), "done")
	if open := s.OpenFiles(); open > maxOpen {
		t.Errorf("%d files open after %d writers, want <= %d", open, writers, maxOpen)
	}
	for w := range writers {
		for i := range logsEach {
			if got := strings.Count(string(readAll(t, s.Get(fmt.Sprintf("w%02d-%02d", w, i)), 0)), "\n"); got != 20 {
				t.Fatalf("w%02d-%02d kept %d lines, want 20", w, i, got)
			}
		}
	}
}

// A log that is not written holds no file once the idle pass has seen it
// unused; one written since stays open, and a closed one reopens on its
// next write, appending.
func TestQuietLogsHoldNoFile(t *testing.T) {
	s := newStore(t, 1<<20, 0)
	s.idleAfter = 20 * time.Millisecond
	for i := range 10 {
		fmt.Fprintln(s.Open(fmt.Sprintf("quiet-%d", i)), "once")
	}
	busy := s.Open("busy")
	for {
		fmt.Fprintln(busy, "tick") // marks it used: the next pass keeps it
		if s.OpenFiles() == 1 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	busy.mu.Lock()
	open := busy.f != nil
	busy.mu.Unlock()
	if !open {
		t.Fatal("the file kept open is not the busy log's")
	}
	fmt.Fprintln(s.Get("quiet-3"), "twice")
	if got := string(readAll(t, s.Get("quiet-3"), 0)); got != "once\ntwice\n" {
		t.Errorf("quiet-3 kept %q", got)
	}
}

// The write path: a line to a log whose file is kept open, and with more
// logs writing in turn than the bound (16 for 4 files: before, every write
// reopened its file; now the writes of the 12 beyond the bound do).
func BenchmarkWrite(b *testing.B) {
	line := []byte("tick 12345\n")
	for _, tt := range []struct {
		name          string
		maxOpen, logs int
	}{{"open", 64, 16}, {"beyond-bound", 4, 16}} {
		b.Run(tt.name, func(b *testing.B) {
			s, err := New(b.TempDir(), 1<<30, tt.maxOpen, nil)
			if err != nil {
				b.Fatal(err)
			}
			logs := make([]*Log, tt.logs)
			for i := range logs {
				logs[i] = s.Open(fmt.Sprintf("inst-%d", i))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				_, _ = logs[i%len(logs)].Write(line)
			}
		})
	}
}
