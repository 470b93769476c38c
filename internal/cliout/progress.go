package cliout

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// Progress shows a status line that changes while a command waits. On a
// terminal it rewrites one line in place; anywhere else (a log file, a CI
// job) it prints each new text on a line of its own, and only when the
// text changed, so logs stay short.
type Progress struct {
	w        io.Writer
	terminal bool
	last     string
	shown    bool
}

// NewProgress writes to w, rewriting in place if terminal is true.
func NewProgress(w io.Writer, terminal bool) *Progress {
	return &Progress{w: w, terminal: terminal}
}

// NewStderrProgress shows progress on standard error, in place when it
// is a terminal.
func NewStderrProgress() *Progress {
	return NewProgress(os.Stderr, IsTerminal(os.Stderr))
}

// IsTerminal reports whether f is a character device, that is a terminal
// a person is looking at, and TERM does not say it cannot move the cursor.
func IsTerminal(f *os.File) bool {
	if os.Getenv("TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// Update shows text if it differs from what is shown.
func (p *Progress) Update(text string) {
	if text == p.last {
		return
	}
	p.last = text
	if p.terminal {
		fmt.Fprintf(p.w, "\r\x1b[K%s", text)
		p.shown = true
		return
	}
	fmt.Fprintln(p.w, text)
}

// Step is one look at something a command waits for: a status line and,
// when Total > 0, how far along it is (Done of Total).
type Step struct {
	Text        string
	Done, Total int
}

// barWidth is the width of the bar between its brackets.
const barWidth = 20

// Show shows a step: on a terminal with a progress bar before its text
// ("[########------------] app: 4/10 ready"), elsewhere as Update does.
func (p *Progress) Show(s Step) {
	if !p.terminal || s.Total <= 0 {
		p.Update(s.Text)
		return
	}
	filled := min(barWidth, max(0, s.Done*barWidth/s.Total))
	p.Update("[" + strings.Repeat("#", filled) + strings.Repeat("-", barWidth-filled) + "] " + s.Text)
}

// Done clears the in-place line so that what is printed next starts on a
// clean line.
func (p *Progress) Done() {
	if p.terminal && p.shown {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.shown = false
	}
}
