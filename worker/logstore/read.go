package logstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"time"
)

// How lines are kept: each line that starts in a write begins with the
// time of the write, in a fixed-width UTC form and a space:
//
//	2026-12-04T10:11:12.123456789Z hello, world
//
// A line cut by rotation (or written before stamping existed) has no
// stamp: it takes the time of the line before it.
const (
	stampLayout = "2006-01-02T15:04:05.000000000Z"
	stampLen    = len(stampLayout) + 1 // with its space
)

// stamped is a write's bytes with their line stamps, in a pooled buffer.
type stamped struct{ b []byte }

var stampPool = sync.Pool{New: func() any { return &stamped{b: make([]byte, 0, 4096)} }}

// stamp copies p, with a stamp of now before each line that starts in it
// (the first too when atLineStart).
func stamp(now time.Time, atLineStart bool, p []byte) *stamped {
	s := stampPool.Get().(*stamped)
	b := s.b[:0]
	ts := now.UTC().AppendFormat(make([]byte, 0, stampLen), stampLayout)
	ts = append(ts, ' ')
	for len(p) > 0 {
		if atLineStart {
			b = append(b, ts...)
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			b = append(b, p...)
			break
		}
		b = append(b, p[:i+1]...)
		p = p[i+1:]
		atLineStart = true
	}
	s.b = b
	return s
}

// release returns the buffer to the pool unless it grew large.
func (s *stamped) release() {
	if cap(s.b) <= 64<<10 {
		stampPool.Put(s)
	}
}

// endsMidLine reports whether the output kept in the current file (or,
// when that is empty, the rotated one) ends in an unfinished line.
func endsMidLine(paths ...string) bool {
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		fi, err := f.Stat()
		if err != nil || fi.Size() == 0 {
			_ = f.Close()
			continue
		}
		last := make([]byte, 1)
		_, err = f.ReadAt(last, fi.Size()-1)
		_ = f.Close()
		return err == nil && last[0] != '\n'
	}
	return false
}

// ReadOptions choose what Read returns of the kept output.
type ReadOptions struct {
	// TailLines keeps the last lines only (0: all; negative: none).
	TailLines int64
	// TailBytes keeps the last bytes only, after the other options (0:
	// all).
	TailBytes int64
	// Since keeps the lines written at or after it (zero: all).
	Since time.Time
	// Timestamps starts each line with its time (RFC 3339, UTC) and a
	// space.
	Timestamps bool
}

// line is one kept line: its time (zero when unknown) and its text, with
// its newline unless it is unfinished.
type line struct {
	at   time.Time
	text []byte
}

// Read returns the kept output as opts choose, oldest first.
func (l *Log) Read(opts ReadOptions) ([]byte, error) {
	l.mu.Lock()
	raw, rotated, err := l.readFiles()
	l.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return render(parse(raw, rotated), opts), nil
}

// readFiles reads both files, rotated first, and says whether there was
// a rotated one; the caller holds l.mu.
func (l *Log) readFiles() (out []byte, rotated bool, err error) {
	for _, suffix := range []string{rotatedSuffix, currentSuffix} {
		b, err := os.ReadFile(l.path(suffix))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, false, &os.PathError{Op: "read", Path: "log of instance " + l.id, Err: err}
		}
		rotated = rotated || suffix == rotatedSuffix
		out = append(out, b...)
	}
	return out, rotated, nil
}

// parse splits kept output into lines. When the output was rotated, its
// first line is dropped if it has no stamp while a later one has: it is
// the end of a line whose start rotated away.
func parse(raw []byte, rotated bool) []line {
	var out []line
	var prev time.Time
	anyStamped, firstStamped := false, false
	for len(raw) > 0 {
		text := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			text = raw[:i+1]
		}
		raw = raw[len(text):]
		at, body, ok := unstamp(text)
		if ok {
			prev, anyStamped = at, true
			if len(out) == 0 {
				firstStamped = true
			}
		} else {
			at = prev
		}
		out = append(out, line{at: at, text: body})
	}
	if rotated && anyStamped && !firstStamped {
		out = out[1:]
	}
	return out
}

// unstamp splits a kept line into its stamp and its text.
func unstamp(text []byte) (time.Time, []byte, bool) {
	if len(text) < stampLen || text[stampLen-1] != ' ' || text[4] != '-' || text[10] != 'T' {
		return time.Time{}, text, false
	}
	at, err := time.Parse(stampLayout, string(text[:stampLen-1]))
	if err != nil {
		return time.Time{}, text, false
	}
	return at, text[stampLen:], true
}

// render writes lines as opts choose.
func render(ls []line, opts ReadOptions) []byte {
	if !opts.Since.IsZero() {
		i := 0
		for i < len(ls) && ls[i].at.Before(opts.Since) {
			i++
		}
		ls = ls[i:]
	}
	if opts.TailLines < 0 {
		ls = nil
	}
	if opts.TailLines > 0 && int64(len(ls)) > opts.TailLines {
		ls = ls[int64(len(ls))-opts.TailLines:]
	}
	var out []byte
	for _, ln := range ls {
		if opts.Timestamps {
			out = appendTime(out, ln.at)
		}
		out = append(out, ln.text...)
	}
	if opts.TailBytes > 0 && int64(len(out)) > opts.TailBytes {
		out = out[int64(len(out))-opts.TailBytes:]
	}
	return out
}

// appendTime writes a line's time as Timestamps shows it.
func appendTime(b []byte, at time.Time) []byte {
	if at.IsZero() {
		return append(b, "-                              "[:stampLen]...)
	}
	b = at.UTC().AppendFormat(b, stampLayout)
	return append(b, ' ')
}

// followerBuffer is how many writes a follower may fall behind by before
// writes are skipped for it.
const followerBuffer = 256

// Chunk is one write as a follower gets it: its bytes, with their line
// stamps when the follower asked for them. Skipped counts the bytes
// skipped before it because the follower fell behind.
type Chunk struct {
	Data    []byte
	Skipped int64
}

// Follower gets what a log is written after it started following.
type Follower struct {
	l          *Log
	timestamps bool
	ch         chan Chunk
	skipped    int64 // guarded by l.mu
	done       chan struct{}
	endOnce    sync.Once
}

// Follow returns the kept output as opts choose and a Follower that gets
// every write after it: nothing is lost or repeated between the two. The
// caller must Close the follower.
func (l *Log) Follow(opts ReadOptions) ([]byte, *Follower, error) {
	f := &Follower{l: l, timestamps: opts.Timestamps, ch: make(chan Chunk, followerBuffer), done: make(chan struct{})}
	l.mu.Lock()
	raw, rotated, err := l.readFiles()
	if err != nil {
		l.mu.Unlock()
		return nil, nil, err
	}
	if l.removed {
		f.end()
	} else {
		if l.followers == nil {
			l.followers = map[*Follower]struct{}{}
		}
		l.followers[f] = struct{}{}
	}
	l.mu.Unlock()
	return render(parse(raw, rotated), opts), f, nil
}

// Next waits for the next write. It returns io.EOF once the log is
// removed, and ctx's error when ctx ends first.
func (f *Follower) Next(ctx context.Context) (Chunk, error) {
	select {
	case c := <-f.ch:
		return c, nil
	default:
	}
	select {
	case c := <-f.ch:
		return c, nil
	case <-f.done:
		select {
		case c := <-f.ch:
			return c, nil
		default:
			return Chunk{}, io.EOF
		}
	case <-ctx.Done():
		return Chunk{}, ctx.Err()
	}
}

// Close stops following.
func (f *Follower) Close() {
	f.l.mu.Lock()
	delete(f.l.followers, f)
	f.l.mu.Unlock()
	f.end()
}

func (f *Follower) end() { f.endOnce.Do(func() { close(f.done) }) }

// notify hands a write to every follower without ever blocking the
// guest: a follower whose buffer is full misses it, and is told how much
// it missed with the next write it gets. The caller holds l.mu.
func (l *Log) notify(now time.Time, atLineStart bool, p []byte) {
	for f := range l.followers {
		var data []byte
		if f.timestamps {
			s := stamp(now, atLineStart, p)
			data = append([]byte(nil), s.b...)
			s.release()
		} else {
			data = append([]byte(nil), p...)
		}
		select {
		case f.ch <- Chunk{Data: data, Skipped: f.skipped}:
			f.skipped = 0
		default:
			f.skipped += int64(len(p))
		}
	}
}

// endFollowers ends every follower: the log is gone. The caller holds
// l.mu.
func (l *Log) endFollowers() {
	for f := range l.followers {
		f.end()
	}
	l.followers = nil
}
