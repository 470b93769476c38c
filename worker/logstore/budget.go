package logstore

import (
	"os"
	"sort"
)

// The node-wide budget: every log is bounded on its own (limit), and all
// of them together by the store's total limit, so that ten thousand
// chatty instances cannot fill the disk a worker shares with its modules,
// its compile cache and, under `up`, etcd. Over the total, the oldest
// output goes first: rotated segments by when they were last written,
// then current segments of the logs written least recently. Under disk
// pressure every rotated segment goes at once and the logs stop growing:
// new output replaces old.
//
// Accounting: Store.total is the bytes of the files of every log that has
// been sized (its files read once, at its first write); files of a log
// never written by this process (an earlier run's, until RemoveUnknown)
// are not counted. A Log's current size is guarded by its mutex, its
// rotated segment (rotated, rotatedSeq) by the store's, so that a writer
// evicts others' rotated segments without waiting for them.

// headroomDivisor: eviction frees a tenth of the total limit beyond what
// a write needs, so that a store at its limit scans its logs once per
// tenth of the limit written, not once per write.
const headroomDivisor = 10

// SetTotalLimit bounds the bytes of all logs together (0: no bound
// beyond each log's own). A limit below one log's bound is raised to it.
func (s *Store) SetTotalLimit(bytes int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if bytes > 0 {
		bytes = max(bytes, s.limit)
	}
	s.totalLimit = bytes
	s.updateCapLocked()
}

// SetPressure tells the store whether the disk is nearly full. Turned on,
// it deletes every rotated segment and keeps the logs from growing beyond
// what they then hold (at least one log's bound) until it is turned off.
// It returns the bytes it freed.
func (s *Store) SetPressure(on bool) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pressure = on
	var freed int64
	if on {
		before := s.total.Load()
		for _, l := range s.rotatedLocked() {
			s.dropRotatedLocked(l)
		}
		freed = before - s.total.Load()
		s.pressureLimit = max(s.total.Load(), s.limit)
	}
	s.updateCapLocked()
	return freed
}

// DiskBytes reports the bytes the store counts on disk.
func (s *Store) DiskBytes() int64 { return s.total.Load() }

// updateCapLocked sets cap from the total limit and the pressure.
func (s *Store) updateCapLocked() {
	c := s.totalLimit
	if s.pressure && (c <= 0 || s.pressureLimit < c) {
		c = s.pressureLimit
	}
	s.cap.Store(c)
}

// makeRoom counts n bytes about to be written (a reservation that wrote
// settles, so that writers at once cannot all pass the check before any
// counts) and evicts the oldest output of any log, l's own rotated
// segment included, until they fit in the budget, when they do not. The
// caller holds l.mu (so l's current segment is never evicted under it).
func (s *Store) makeRoom(n int64) {
	total := s.total.Add(n)
	c := s.cap.Load()
	if c <= 0 || total <= c {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c = s.cap.Load()
	if c <= 0 || s.total.Load() <= c {
		return // another writer made room
	}
	target := c - c/headroomDivisor
	for _, l := range s.rotatedLocked() {
		if s.total.Load() <= target {
			return
		}
		s.dropRotatedLocked(l)
	}
	current := make([]*Log, 0, len(s.logs))
	for _, l := range s.logs {
		current = append(current, l)
	}
	sort.Slice(current, func(i, j int) bool { return current[i].lastWrite.Load() < current[j].lastWrite.Load() })
	for _, l := range current {
		if s.total.Load() <= target {
			return
		}
		if l.mu.TryLock() { // busy writing (or l itself): left alone
			s.dropCurrentLocked(l)
			l.mu.Unlock()
		}
	}
}

// rotatedLocked lists the logs with a rotated segment, oldest first.
func (s *Store) rotatedLocked() []*Log {
	var out []*Log
	for _, l := range s.logs {
		if l.rotated > 0 {
			out = append(out, l)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].rotatedSeq < out[j].rotatedSeq })
	return out
}

// dropRotatedLocked deletes l's rotated segment; the caller holds s.mu.
func (s *Store) dropRotatedLocked(l *Log) {
	if err := os.Remove(l.path(rotatedSuffix)); err != nil && !os.IsNotExist(err) {
		l.s.logger.Warn("evicting instance output", "instance", l.id, "err", err)
		return
	}
	s.total.Add(-l.rotated)
	l.rotated = 0
}

// dropCurrentLocked deletes l's current segment; the caller holds l.mu
// and s.mu.
func (s *Store) dropCurrentLocked(l *Log) {
	if !l.sized || l.size == 0 {
		return
	}
	s.closeLocked(l)
	if err := os.Remove(l.path(currentSuffix)); err != nil && !os.IsNotExist(err) {
		l.s.logger.Warn("evicting instance output", "instance", l.id, "err", err)
		return
	}
	s.total.Add(-l.size)
	l.size = 0
	l.midLine = false
}

// wrote counts n bytes written to l's current segment, of the reserved
// bytes makeRoom counted; the caller holds l.mu.
func (s *Store) wrote(l *Log, n, reserved int64) {
	l.size += n
	s.total.Add(n - reserved)
	l.lastWrite.Store(s.seq.Add(1))
}

// sizeRotatedLocked counts l's rotated segment from an earlier run, when
// l is first sized; the caller holds l.mu and s.mu.
func (s *Store) sizeRotatedLocked(l *Log) {
	if fi, err := os.Stat(l.path(rotatedSuffix)); err == nil {
		l.rotated = fi.Size()
		s.total.Add(fi.Size())
	}
}
