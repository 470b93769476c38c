// Package clierr is the wasmorch binaries' one kind of failure: what went
// wrong and what to do about it, printed as "error: <What>; <Hint>" on one
// line. It is apart from internal/cliclient (which re-exports it) so that
// the slim agent can say what failed without linking the client.
package clierr

import (
	"errors"
	"fmt"
	"strings"
)

// Error is a failure as the CLI reports it: what went wrong and what to do
// about it, printed as "error: <What>; <Hint>" on one line.
type Error struct {
	What  string
	Hint  string
	Cause error // for errors.Is / errors.As; never printed
}

func (e *Error) Error() string {
	if e.Hint == "" {
		return e.What
	}
	return e.What + "; " + e.Hint
}

func (e *Error) Unwrap() error { return e.Cause }

// Errorf builds an Error whose What is formatted.
func Errorf(hint, format string, a ...any) *Error {
	err := fmt.Errorf(format, a...)
	return &Error{What: err.Error(), Hint: hint, Cause: errors.Unwrap(err)}
}

// OneLine folds a message onto one line, so that every error the CLI
// prints is exactly one line however its cause was written.
func OneLine(s string) string {
	lines := strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' })
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, " ")
}
