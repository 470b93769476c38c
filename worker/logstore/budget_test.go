package logstore

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// writeLines writes n bytes or more to l in lines of about 100 bytes.
func writeLines(t *testing.T, l *Log, tag string, n int) {
	t.Helper()
	for i, written := 0, 0; written < n; i++ {
		line := fmt.Sprintf("%s %06d %s\n", tag, i, strings.Repeat("x", 80))
		if _, err := l.Write([]byte(line)); err != nil {
			t.Fatal(err)
		}
		written += len(line)
	}
}

func exists(t *testing.T, s *Store, name string) bool {
	t.Helper()
	_, err := os.Stat(filepath.Join(s.dir, name))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return err == nil
}

// 160 chatty instances, as `scale flood --replicas 160` makes, within the
// node's budget however much each writes.
func TestAllLogsTogetherStayWithinTheTotalLimit(t *testing.T) {
	const perLog, total = 64 << 10, 1 << 20
	s := newStore(t, perLog, 0)
	s.SetTotalLimit(total)
	logs := make([]*Log, 160)
	for i := range logs {
		logs[i] = s.Open(fmt.Sprintf("flood-%03d", i))
	}
	for round := range 8 {
		for i, l := range logs {
			writeLines(t, l, fmt.Sprintf("i%03d-r%d", i, round), 8<<10)
		}
	}
	if got := diskBytes(t, s.dir); got > total {
		t.Fatalf("%d bytes of logs on disk, want at most the total limit of %d", got, total)
	}
	if got, want := s.DiskBytes(), diskBytes(t, s.dir); got != want {
		t.Fatalf("the store counts %d bytes, the disk holds %d", got, want)
	}
	kept := string(readAll(t, logs[159], 0))
	if !strings.HasSuffix(kept, strings.Repeat("x", 80)+"\n") || !strings.Contains(kept, "i159-r7") {
		t.Fatalf("the latest output of the latest writer was evicted: %q...", kept[:min(len(kept), 200)])
	}
}

func TestTheOldestRotatedSegmentsGoFirst(t *testing.T) {
	const perLog = 8 << 10
	s := newStore(t, perLog, 0)
	const total = 4 * perLog // room for four logs of 7 KiB (their 8 KiB of lines, cut by rotation), not five
	s.SetTotalLimit(total)
	for _, id := range []string{"a", "b", "c", "d"} {
		writeLines(t, s.Open(id), id, perLog) // a current and a rotated segment each
	}
	if !exists(t, s, "a.log.1") || !exists(t, s, "d.log.1") {
		t.Fatal("setup: want a rotated segment for every log")
	}
	writeLines(t, s.Open("e"), "e", perLog)
	if exists(t, s, "a.log.1") {
		t.Error("the oldest rotated segment (a's) was kept")
	}
	if !exists(t, s, "d.log.1") {
		t.Error("the newest rotated segment of the others (d's) was evicted")
	}
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		if !exists(t, s, id+".log") {
			t.Errorf("%s's current segment was evicted while rotated segments were left", id)
		}
	}
	if got := diskBytes(t, s.dir); got > total {
		t.Fatalf("%d bytes on disk, want at most %d", got, total)
	}
}

func TestDiskPressureEvictsRotatedSegmentsAndStopsGrowth(t *testing.T) {
	const perLog = 8 << 10
	s := newStore(t, perLog, 0)
	logs := make([]*Log, 10)
	for i := range logs {
		logs[i] = s.Open(fmt.Sprintf("l%d", i))
		writeLines(t, logs[i], "before", perLog)
	}
	before := diskBytes(t, s.dir)
	freed := s.SetPressure(true)
	held := diskBytes(t, s.dir)
	if rotated, _ := filepath.Glob(filepath.Join(s.dir, "*"+rotatedSuffix)); len(rotated) != 0 {
		t.Fatalf("under disk pressure rotated segments are left: %v", rotated)
	}
	if freed != before-held || freed <= 0 {
		t.Fatalf("SetPressure(true) says it freed %d bytes; the disk went from %d to %d", freed, before, held)
	}
	for _, l := range logs {
		writeLines(t, l, "during", 2*perLog)
	}
	if got := diskBytes(t, s.dir); got > held {
		t.Fatalf("logs grew from %d to %d bytes under disk pressure", held, got)
	}
	if got := string(readAll(t, logs[9], 0)); !strings.Contains(got, "during") {
		t.Fatal("output written under pressure was not kept: new output replaces old")
	}
	s.SetPressure(false)
	for _, l := range logs {
		writeLines(t, l, "after", perLog)
	}
	if got := diskBytes(t, s.dir); got <= held {
		t.Fatalf("logs still held to %d bytes after the pressure ended (%d)", held, got)
	}
}

func TestOutputOfAnEarlierRunCounts(t *testing.T) {
	dir := t.TempDir()
	s1, err := New(dir, 8<<10, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	writeLines(t, s1.Open("old"), "old", 8<<10)
	_ = s1.Close()
	s2, err := New(dir, 8<<10, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	fmt.Fprintln(s2.Open("old"), "again")
	if got, want := s2.DiskBytes(), diskBytes(t, dir); got != want {
		t.Fatalf("the store counts %d bytes, the disk holds %d", got, want)
	}
}

// Writers, removals and evictions at once: the count stays exact and the
// disk within the limit, give or take what the writers hold at the end.
func TestTheBudgetHoldsUnderConcurrentWriters(t *testing.T) {
	const perLog, total, writers, maxWrite = 8 << 10, 64 << 10, 16, 1 << 10
	s := newStore(t, perLog, 8)
	s.SetTotalLimit(total)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for i := range 1000 {
				id := fmt.Sprintf("log-%02d", r.IntN(48))
				if i%97 == 0 {
					_ = s.Remove(id)
					continue
				}
				line := strings.Repeat("z", r.IntN(maxWrite-40)) + "\n"
				_, _ = s.Open(id).Write([]byte(line))
			}
		})
	}
	wg.Wait()
	disk := diskBytes(t, s.dir)
	if got := s.DiskBytes(); got != disk {
		t.Fatalf("the store counts %d bytes, the disk holds %d", got, disk)
	}
	if disk > total+writers*maxWrite {
		t.Fatalf("%d bytes on disk, want at most %d", disk, total+writers*maxWrite)
	}
}
