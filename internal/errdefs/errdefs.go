// Package errdefs holds the error categories shared by the whole repository
// (after containerd's errdefs). Code wraps a category with %w and tests it
// with errors.Is; the API edge maps categories to gRPC codes in one place
// (ToGRPC / FromGRPC), so no caller ever matches error strings.
package errdefs

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// The categories.
var (
	ErrNotFound           = errors.New("not found")
	ErrAlreadyExists      = errors.New("already exists")
	ErrInvalidArgument    = errors.New("invalid argument")
	ErrFailedPrecondition = errors.New("failed precondition")
	ErrConflict           = errors.New("conflict") // a compare-and-swap lost a race
	ErrUnavailable        = errors.New("unavailable")
	// ErrUnauthenticated: no valid credential; ErrPermissionDenied: a
	// valid one that does not allow the call.
	ErrUnauthenticated  = errors.New("unauthenticated")
	ErrPermissionDenied = errors.New("permission denied")
	// ErrExpired: a revision too old to watch or continue a list from
	// (its history is compacted); the client lists again.
	ErrExpired = errors.New("expired")
)

// IsNotFound and friends are shorthands for errors.Is.
func IsNotFound(err error) bool           { return errors.Is(err, ErrNotFound) }
func IsAlreadyExists(err error) bool      { return errors.Is(err, ErrAlreadyExists) }
func IsInvalidArgument(err error) bool    { return errors.Is(err, ErrInvalidArgument) }
func IsFailedPrecondition(err error) bool { return errors.Is(err, ErrFailedPrecondition) }
func IsConflict(err error) bool           { return errors.Is(err, ErrConflict) }
func IsUnavailable(err error) bool        { return errors.Is(err, ErrUnavailable) }
func IsUnauthenticated(err error) bool    { return errors.Is(err, ErrUnauthenticated) }
func IsPermissionDenied(err error) bool   { return errors.Is(err, ErrPermissionDenied) }
func IsExpired(err error) bool            { return errors.Is(err, ErrExpired) }

// Invalidf, NotFoundf ... build an error in a category with a message.
func Invalidf(format string, a ...any) error  { return wrapf(ErrInvalidArgument, format, a...) }
func NotFoundf(format string, a ...any) error { return wrapf(ErrNotFound, format, a...) }
func Existsf(format string, a ...any) error   { return wrapf(ErrAlreadyExists, format, a...) }
func Preconditionf(format string, a ...any) error {
	return wrapf(ErrFailedPrecondition, format, a...)
}
func Conflictf(format string, a ...any) error    { return wrapf(ErrConflict, format, a...) }
func Unavailablef(format string, a ...any) error { return wrapf(ErrUnavailable, format, a...) }
func Unauthenticatedf(format string, a ...any) error {
	return wrapf(ErrUnauthenticated, format, a...)
}
func Deniedf(format string, a ...any) error  { return wrapf(ErrPermissionDenied, format, a...) }
func Expiredf(format string, a ...any) error { return wrapf(ErrExpired, format, a...) }

type categorized struct {
	cat error
	msg string
}

func (e *categorized) Error() string { return e.msg }
func (e *categorized) Unwrap() error { return e.cat }

func wrapf(cat error, format string, a ...any) error {
	err := fmt.Errorf(format, a...)
	return &categorizedWrap{categorized{cat: cat, msg: err.Error()}, errors.Unwrap(err)}
}

// categorizedWrap keeps both the category and any %w cause reachable.
type categorizedWrap struct {
	categorized
	cause error
}

func (e *categorizedWrap) Unwrap() []error {
	if e.cause == nil {
		return []error{e.cat}
	}
	return []error{e.cat, e.cause}
}

// ToGRPC maps an error to a gRPC status error, keeping its message.
func ToGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Unknown
	switch {
	case IsNotFound(err):
		code = codes.NotFound
	case IsAlreadyExists(err):
		code = codes.AlreadyExists
	case IsInvalidArgument(err):
		code = codes.InvalidArgument
	case IsFailedPrecondition(err):
		code = codes.FailedPrecondition
	case IsConflict(err):
		code = codes.Aborted
	case IsUnavailable(err):
		code = codes.Unavailable
	case IsUnauthenticated(err):
		code = codes.Unauthenticated
	case IsPermissionDenied(err):
		code = codes.PermissionDenied
	case IsExpired(err):
		code = codes.OutOfRange
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	return status.Error(code, err.Error())
}

// FromGRPC turns a gRPC status error back into a categorized error whose
// message is the server's message alone.
func FromGRPC(err error) error {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return err
	}
	msg := st.Message()
	switch st.Code() {
	case codes.NotFound:
		return &categorized{ErrNotFound, msg}
	case codes.AlreadyExists:
		return &categorized{ErrAlreadyExists, msg}
	case codes.InvalidArgument:
		return &categorized{ErrInvalidArgument, msg}
	case codes.FailedPrecondition:
		return &categorized{ErrFailedPrecondition, msg}
	case codes.Aborted:
		return &categorized{ErrConflict, msg}
	case codes.Unavailable:
		return &categorized{ErrUnavailable, msg}
	case codes.Unauthenticated:
		return &categorized{ErrUnauthenticated, msg}
	case codes.PermissionDenied:
		return &categorized{ErrPermissionDenied, msg}
	case codes.OutOfRange:
		return &categorized{ErrExpired, msg}
	}
	return errors.New(msg)
}
