// Package logstore keeps each instance's output (stdout and stderr) on disk,
// bounded in size and in open file descriptors: a worker holds ten thousand
// instances, so each log is one current file plus one rotated ".1" file (each
// at most half the bound), and only a bounded set of files stays open (at
// most half the descriptor limit), that of logs written recently:
// a file not written for idleClose is closed, and a log written while the
// open files are all in use opens its file for that write only (see
// ensureOpen). Each line is kept with the time it was written (read.go), so
// that output can be read by lines and by time, and a reader may follow
// what is written next.
package logstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// DefaultMaxOpen is the fewest log files a Store keeps open when told 0:
// it keeps half the process's file descriptor limit when that is more (Go
// raises the soft limit to the hard one at start). Only logs written in
// the last idleClose hold a file, so the bound is for instances that write
// all the time: each one beyond it pays an open and a close per write
// (2,000 tickers under 512 open files made ~4 MiB/s of garbage, [hardening]
// 21 item 26; 10,000 tickers under 5,000 kept thousands of threads blocked
// in open and close, and did not all start within 5 minutes). Half leaves
// the other half to the rest of the process (sockets, guests' files).
const DefaultMaxOpen = 512

// defaultMaxOpen is DefaultMaxOpen or half the descriptor limit.
func defaultMaxOpen() int {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil || lim.Cur/2 < DefaultMaxOpen {
		return DefaultMaxOpen
	}
	return int(min(lim.Cur/2, 1<<20))
}

// minLimit keeps rotation meaningful: each half must hold at least a line.
const minLimit = 2

// evictScan bounds how many open files an opener looks at for one not
// written since the last idle pass, to close in its place.
const evictScan = 8

// idleClose is how often the store closes the files of the logs not
// written since it last looked: an instance that is quiet (most are) holds
// no descriptor, one that writes every few seconds keeps its file open.
const idleClose = 5 * time.Second

const (
	currentSuffix = ".log"
	rotatedSuffix = ".log.1"
)

// Store holds the logs of the instances of one worker, one directory.
//
// Lock order: Log.mu, then Store.mu; a Log's mutex is only ever tried
// (TryLock) while Store.mu is held, so eviction never deadlocks. A write to
// an open file takes no store-wide lock: it marks its log used (an atomic),
// which the idle pass and openers read.
type Store struct {
	dir     string
	limit   int64
	maxOpen int
	logger  *slog.Logger

	now       func() time.Time // the time lines are stamped with
	idleAfter time.Duration    // idleClose; shorter in tests

	mu     sync.Mutex
	logs   map[string]*Log
	open   []*Log        // the logs whose file is kept open, in no order
	hand   int           // the next index of open an opener looks at
	idle   *time.Timer   // closes unused files every idleClose while any is open
	opened chan struct{} // closed (and replaced) when a new log is opened

	// The node-wide budget (budget.go).
	total         atomic.Int64  // bytes of the counted files
	cap           atomic.Int64  // the bound on total now; 0: none
	seq           atomic.Uint64 // orders writes
	totalLimit    int64         // SetTotalLimit; guarded by mu
	pressure      bool          // SetPressure; guarded by mu
	pressureLimit int64         // what the logs held when pressure began; guarded by mu
}

// Log is one instance's output. It is an io.Writer that never fails: output
// that cannot be stored is dropped, so that a full disk never kills a guest.
type Log struct {
	s    *Store
	id   string
	name string // file name stem, derived from id

	mu   sync.Mutex
	f    *os.File // nil while closed
	slot int      // index in s.open while f != nil; guarded by s.mu
	// transient: f was opened for the write in progress only (the open
	// files are all in use), and is closed at its end.
	transient bool
	used      atomic.Bool // written since the idle pass last looked
	size      int64       // bytes in the current file
	sized     bool        // size has been read from disk once
	removed   bool
	failed    bool // a write error has been logged already
	// midLine is set while the output kept so far ends in an unfinished
	// line: the next write continues it rather than start a stamped line.
	midLine bool
	// followers get each write as it happens (read.go).
	followers map[*Follower]struct{}

	// The budget (budget.go): the rotated segment, guarded by s.mu, and
	// the order of the latest write.
	rotated    int64  // bytes in the rotated file
	rotatedSeq uint64 // lastWrite when it was rotated
	lastWrite  atomic.Uint64
}

// New returns a Store over dir, keeping at most limit bytes per instance on
// disk and at most maxOpen files open (0 means half the process's
// file descriptor limit, at least DefaultMaxOpen).
func New(dir string, limit int64, maxOpen int, logger *slog.Logger) (*Store, error) {
	if limit < minLimit {
		return nil, fmt.Errorf("logstore: limit %d bytes is too small", limit)
	}
	if maxOpen <= 0 {
		maxOpen = defaultMaxOpen()
	}
	if logger == nil {
		logger = slog.Default()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("logstore: %w", err)
	}
	return &Store{dir: dir, limit: limit, maxOpen: maxOpen, logger: logger, logs: map[string]*Log{}, now: time.Now, idleAfter: idleClose, opened: make(chan struct{})}, nil
}

// Open returns the log of instance id, creating it if needed. Output already
// on disk for id (from an earlier run) is kept and appended to.
func (s *Store) Open(id string) *Log {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.logs[id]; ok {
		return l
	}
	l := &Log{s: s, id: id, name: fileStem(id), slot: -1}
	s.logs[id] = l
	close(s.opened)
	s.opened = make(chan struct{})
	return l
}

// Wait returns the log of instance id once the store holds it, or nil
// when ctx ends first: a follower may ask for an instance before its
// worker has started it.
func (s *Store) Wait(ctx context.Context, id string) *Log {
	for {
		s.mu.Lock()
		l, opened := s.logs[id], s.opened
		s.mu.Unlock()
		if l != nil {
			return l
		}
		select {
		case <-opened:
		case <-ctx.Done():
			return nil
		}
	}
}

// Get returns the log of instance id, or nil if the store does not hold it.
func (s *Store) Get(id string) *Log {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logs[id]
}

// Remove forgets instance id and deletes its files. Later writes to its Log
// are dropped.
func (s *Store) Remove(id string) error {
	l := s.Get(id)
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.removed = true
	l.endFollowers()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked(l)
	s.total.Add(-l.size - l.rotated)
	l.size, l.rotated = 0, 0
	if s.logs[id] != l {
		return nil // Its files are another Log's now.
	}
	// The files go before the id leaves the map, both under s.mu: a log
	// opened again under the id (Open takes s.mu) starts its files after
	// these are gone, rather than have them deleted under it, its bytes
	// counted and no longer on disk.
	err := l.deleteFiles()
	delete(s.logs, id)
	return err
}

// RemoveUnknown deletes the files of every log the store does not hold: the
// output of instances that this worker no longer runs.
func (s *Store) RemoveUnknown() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := make(map[string]bool, len(s.logs))
	for _, l := range s.logs {
		keep[l.name] = true
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("logstore: %w", err)
	}
	var firstErr error
	for _, e := range entries {
		stem, ok := strings.CutSuffix(e.Name(), rotatedSuffix)
		if !ok {
			stem, ok = strings.CutSuffix(e.Name(), currentSuffix)
		}
		if !ok || keep[stem] {
			continue
		}
		if err := os.Remove(filepath.Join(s.dir, e.Name())); err != nil && !os.IsNotExist(err) && firstErr == nil {
			firstErr = fmt.Errorf("logstore: %w", err)
		}
	}
	return firstErr
}

// OpenFiles reports how many log files are open.
func (s *Store) OpenFiles() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

// Close closes every open file; logs stay usable and reopen on demand.
func (s *Store) Close() error {
	s.mu.Lock()
	logs := append([]*Log(nil), s.open...)
	if s.idle != nil {
		s.idle.Stop()
		s.idle = nil
	}
	s.mu.Unlock()
	for _, l := range logs {
		l.mu.Lock()
		s.mu.Lock()
		s.closeLocked(l)
		s.mu.Unlock()
		l.mu.Unlock()
	}
	return nil
}

// closeLocked closes l's file; the caller holds l.mu and s.mu.
func (s *Store) closeLocked(l *Log) {
	if i := l.slot; i >= 0 {
		last := len(s.open) - 1
		s.open[i] = s.open[last]
		s.open[i].slot = i
		s.open[last] = nil
		s.open = s.open[:last]
		l.slot = -1
	}
	if l.f != nil {
		_ = l.f.Close() // Written with plain writes: nothing buffered to lose.
		l.f = nil
	}
	l.transient = false
}

// Write appends p, each line that starts in it stamped with the time,
// rotating at half the bound. A write larger than half the bound keeps
// only its newest half. Followers get p as it is.
func (l *Log) Write(p []byte) (int, error) {
	n := len(p)
	if n == 0 {
		return 0, nil
	}
	now := l.s.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	defer l.closeTransient()
	if l.removed {
		return n, nil
	}
	if !l.sized {
		_ = l.ensureOpen() // Learns whether the output ends mid-line; a failure shows below.
	}
	l.notify(now, !l.midLine, p)
	buf := stamp(now, !l.midLine, p)
	l.midLine = p[len(p)-1] != '\n'
	defer buf.release()
	p = buf.b
	half := l.s.limit / 2
	if int64(len(p)) > half {
		p = p[int64(len(p))-half:]
	}
	for len(p) > 0 {
		if err := l.ensureOpen(); err != nil {
			l.fail(err)
			return n, nil
		}
		if l.size >= half {
			if err := l.rotate(); err != nil {
				l.fail(err)
				return n, nil
			}
			continue
		}
		chunk := p[:min(int64(len(p)), half-l.size)]
		l.s.makeRoom(int64(len(chunk)))
		m, err := l.f.Write(chunk)
		l.s.wrote(l, int64(m), int64(len(chunk)))
		p = p[m:]
		if err != nil {
			l.fail(err)
			return n, nil
		}
	}
	return n, nil
}

func (l *Log) fail(err error) {
	if !l.failed {
		l.failed = true
		l.s.logger.Warn("instance output dropped", "instance", l.id, "err", err)
	}
}

// closeTransient closes a file opened for one write; the caller holds l.mu.
func (l *Log) closeTransient() {
	if l.transient {
		_ = l.f.Close()
		l.f, l.transient = nil, false
	}
}

// ensureOpen opens the current file in append mode if it is closed, and
// marks it used. The caller holds l.mu.
//
// A file opened when the store already keeps its bound of open files
// takes the place of one not written since the last idle pass, or, when
// every one was, is opened for this write only (transient). Instances
// write in turn, so closing the least recently written file instead (LRU)
// would make every write reopen its file as soon as more instances write
// than the bound allows: with a transient open, only the writes beyond
// the bound pay for one.
func (l *Log) ensureOpen() error {
	s := l.s
	if l.f != nil {
		if !l.used.Load() {
			l.used.Store(true)
		}
		return nil
	}
	f, err := os.OpenFile(l.path(currentSuffix), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if !l.sized {
		fi, err := f.Stat()
		if err != nil {
			_ = f.Close()
			return err
		}
		l.midLine = endsMidLine(l.path(currentSuffix), l.path(rotatedSuffix))
		s.mu.Lock()
		l.size, l.sized = fi.Size(), true
		s.total.Add(fi.Size())
		s.sizeRotatedLocked(l)
		s.mu.Unlock()
	}
	s.mu.Lock()
	l.f = f
	l.used.Store(true)
	if len(s.open) >= s.maxOpen {
		s.evictQuietLocked()
	}
	if len(s.open) >= s.maxOpen {
		l.transient = true
		s.mu.Unlock()
		return nil
	}
	l.slot = len(s.open)
	s.open = append(s.open, l)
	if s.idle == nil {
		s.idle = time.AfterFunc(s.idleAfter, s.closeIdle)
	}
	s.mu.Unlock()
	return nil
}

// evictQuietLocked closes one open file not written since the last idle
// pass, if it finds one among the next evictScan; a log busy writing (its
// mutex held) is passed over.
func (s *Store) evictQuietLocked() {
	for range min(evictScan, len(s.open)) {
		if s.hand >= len(s.open) {
			s.hand = 0
		}
		victim := s.open[s.hand]
		if !victim.used.Load() && victim.mu.TryLock() {
			s.closeLocked(victim) // the last file moves here
			victim.mu.Unlock()
			return
		}
		s.hand++
	}
}

// closeIdle closes the files of the logs not written since it last ran,
// and runs again after idleAfter while any file is open.
func (s *Store) closeIdle() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := 0; i < len(s.open); {
		l := s.open[i]
		if !l.used.Swap(false) && l.mu.TryLock() {
			s.closeLocked(l) // the last file moves to i
			l.mu.Unlock()
			continue
		}
		i++
	}
	s.idle = nil
	if len(s.open) > 0 {
		s.idle = time.AfterFunc(s.idleAfter, s.closeIdle)
	}
}

// rotate moves the current file to ".1", replacing the previous one. The
// caller holds l.mu.
func (l *Log) rotate() error {
	s := l.s
	s.mu.Lock()
	s.closeLocked(l)
	// Under s.mu, so that eviction sees the rename and its accounting as one.
	err := os.Rename(l.path(currentSuffix), l.path(rotatedSuffix))
	switch {
	case err == nil:
		s.total.Add(-l.rotated) // replaced
		l.rotated, l.rotatedSeq = l.size, l.lastWrite.Load()
	case os.IsNotExist(err):
		s.total.Add(-l.size) // gone already
	default:
		s.mu.Unlock()
		return err
	}
	l.size, l.sized = 0, true
	s.mu.Unlock()
	return l.ensureOpen()
}

func (l *Log) path(suffix string) string { return filepath.Join(l.s.dir, l.name+suffix) }

func (l *Log) deleteFiles() error {
	var firstErr error
	for _, suffix := range []string{currentSuffix, rotatedSuffix} {
		if err := os.Remove(l.path(suffix)); err != nil && !os.IsNotExist(err) && firstErr == nil {
			firstErr = fmt.Errorf("logstore: %w", err)
		}
	}
	return firstErr
}

// fileStem names an instance's files: the id itself when it is a plain file
// name, else a hash of it, so that no id can reach outside the directory.
func fileStem(id string) string {
	safe := id != "" && len(id) <= 200 && id[0] != '.'
	for i := 0; safe && i < len(id); i++ {
		c := id[i]
		safe = c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	}
	if safe {
		return id
	}
	sum := sha256.Sum256([]byte(id))
	return "x-" + hex.EncodeToString(sum[:16])
}
