package logstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// clockAt makes s stamp lines with the times of *at.
func clockAt(s *Store, at *time.Time) { s.now = func() time.Time { return *at } }

func read(t *testing.T, l *Log, opts ReadOptions) string {
	t.Helper()
	b, err := l.Read(opts)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestReadByLinesTimeAndWithTimestamps(t *testing.T) {
	s := newStore(t, 1<<20, 0)
	at := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)
	clockAt(s, &at)
	l := s.Open("web-abcde")
	fmt.Fprint(l, "one\ntwo\nthr")
	at = at.Add(time.Minute)
	fmt.Fprint(l, "ee\nfour\n") // "three" was started a minute ago
	at = at.Add(time.Minute)
	fmt.Fprint(l, "five")

	for _, tc := range []struct {
		name string
		opts ReadOptions
		want string
	}{
		{"everything", ReadOptions{}, "one\ntwo\nthree\nfour\nfive"},
		{"the last two lines, an unfinished one counting", ReadOptions{TailLines: 2}, "four\nfive"},
		{"more lines than kept", ReadOptions{TailLines: 50}, "one\ntwo\nthree\nfour\nfive"},
		{"since a line's time keeps that line", ReadOptions{Since: at.Add(-time.Minute)}, "four\nfive"},
		{"since after everything", ReadOptions{Since: at.Add(time.Second)}, ""},
		{"bytes after lines", ReadOptions{TailLines: 2, TailBytes: 3}, "ive"},
		{"timestamps", ReadOptions{TailLines: 3, Timestamps: true},
			"2026-12-04T10:00:00.000000000Z three\n2026-12-04T10:01:00.000000000Z four\n2026-12-04T10:02:00.000000000Z five"},
	} {
		if got := read(t, l, tc.opts); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestALineGoesOnAfterANewStore(t *testing.T) {
	dir := t.TempDir()
	s1, err := New(dir, 1<<20, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(s1.Open("a"), "half a li")
	_ = s1.Close()
	s2, err := New(dir, 1<<20, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	l := s2.Open("a")
	fmt.Fprint(l, "ne\nnext\n")
	if got := read(t, l, ReadOptions{TailLines: 2}); got != "half a line\nnext\n" {
		t.Fatalf("kept %q", got)
	}
}

func TestOutputWrittenBeforeStampsIsStillRead(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "old.log"), []byte("from an older worker\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := New(dir, 1<<20, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l := s.Open("old")
	fmt.Fprint(l, "new\n")
	if got := read(t, l, ReadOptions{}); got != "from an older worker\nnew\n" {
		t.Fatalf("kept %q", got)
	}
	if got := read(t, l, ReadOptions{Since: time.Now().Add(-time.Hour)}); got != "new\n" {
		t.Fatalf("since an hour ago: %q (a line of unknown time is not recent)", got)
	}
}

func TestAFollowerMissesNothingAndRepeatsNothing(t *testing.T) {
	s := newStore(t, 1<<20, 0)
	l := s.Open("f")
	fmt.Fprint(l, "kept 1\nkept 2\n")
	kept, f, err := l.Follow(ReadOptions{TailLines: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if string(kept) != "kept 2\n" {
		t.Fatalf("kept = %q", kept)
	}
	fmt.Fprint(l, "after 1\n")
	fmt.Fprint(l, "after 2\n")
	var got strings.Builder
	for range 2 {
		c, err := f.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		got.Write(c.Data)
	}
	if got.String() != "after 1\nafter 2\n" {
		t.Fatalf("followed %q", got.String())
	}
	if err := s.Remove("f"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Next(context.Background()); !errors.Is(err, io.EOF) {
		t.Fatalf("Next after Remove = %v, want io.EOF", err)
	}
}

func TestAFollowerThatFallsBehindIsToldWhatItMissed(t *testing.T) {
	s := newStore(t, 1<<20, 0)
	l := s.Open("f")
	_, f, err := l.Follow(ReadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for range followerBuffer + 10 {
		fmt.Fprint(l, "0123456789")
	}
	for range followerBuffer {
		if c, _ := f.Next(context.Background()); c.Skipped != 0 {
			t.Fatalf("a buffered write reports %d bytes skipped", c.Skipped)
		}
	}
	fmt.Fprint(l, "last")
	c, err := f.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if c.Skipped != 100 || string(c.Data) != "last" {
		t.Fatalf("after falling behind: %+v, want 100 bytes skipped then \"last\"", c)
	}
}

func TestWaitReturnsALogOpenedLater(t *testing.T) {
	s := newStore(t, 1<<20, 0)
	got := make(chan *Log)
	go func() { got <- s.Wait(context.Background(), "later") }()
	l := s.Open("later")
	if w := <-got; w != l {
		t.Fatalf("Wait returned %p, want %p", w, l)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if s.Wait(ctx, "never") != nil {
		t.Fatal("Wait with a canceled context returned a log")
	}
}
