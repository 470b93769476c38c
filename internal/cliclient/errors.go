package cliclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/internal/clierr"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Error is a failure as the CLI reports it: what went wrong and what to do
// about it, printed as "error: <What>; <Hint>" on one line (clierr's,
// which the slim agent shares without linking this client).
type Error = clierr.Error

// Errorf builds an Error whose What is formatted.
func Errorf(hint, format string, a ...any) *Error { return clierr.Errorf(hint, format, a...) }

// OneLine folds a message onto one line, so that every error the CLI
// prints is exactly one line however its cause was written.
func OneLine(s string) string { return clierr.OneLine(s) }

// errUnreachable marks the errors for a server that could not be
// connected to, as opposed to one that answered with an error.
var errUnreachable = errors.New("server unreachable")

const serverHint = "is 'wasmorch up' running? set --server or WASMORCH_SERVER"

// unreachable is the error for a server that cannot be connected to.
func (c *Client) unreachable(why string, cause error) error {
	return &Error{
		What:  fmt.Sprintf("cannot reach the wasmorch server at %s (%s)", c.addr, why),
		Hint:  serverHint,
		Cause: errors.Join(errUnreachable, errdefs.ErrUnavailable, cause),
	}
}

// dialReason says in a few words why a dial failed, from the error's type
// rather than its text.
func dialReason(err error) string {
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.As(err, &dnsErr):
		return "unknown host " + dnsErr.Name
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to host"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "no answer"
	}
	return OneLine(err.Error())
}

// failure turns an error from a call into the one the user sees. workload,
// when set, names the workload the call was about, so that NotFound can
// say which one is missing.
func (c *Client) failure(err error, workload string) error {
	if err == nil {
		return nil
	}
	var ue *Error
	if errors.As(err, &ue) {
		return err
	}
	code := status.Code(err)
	if code == codes.Canceled || errors.Is(err, context.Canceled) {
		return &Error{What: "interrupted", Hint: "nothing more was sent; see 'wasmorch get workloads' for where things stand", Cause: err}
	}
	if code == codes.Unavailable {
		if herr := c.dials.handshakeFailure(); herr != nil {
			return c.credentialError(herr)
		}
	}
	if code == codes.Unavailable || code == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded) {
		if why, cause, ok := c.dials.unreachable(); ok {
			return c.unreachable(why, cause)
		}
	}
	if code == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded) {
		return &Error{
			What:  fmt.Sprintf("the wasmorch server at %s did not answer in time", c.addr),
			Hint:  "check its log, or try again",
			Cause: errors.Join(context.DeadlineExceeded, err),
		}
	}
	cat := errdefs.FromGRPC(err)
	msg := OneLine(cat.Error())
	switch {
	case errdefs.IsUnauthenticated(cat), errdefs.IsPermissionDenied(cat):
		return c.authFailure(cat)
	case errdefs.IsNotFound(cat) && workload != "":
		return &Error{What: fmt.Sprintf("workload %q not found", workload), Hint: "see 'wasmorch get workloads'", Cause: cat}
	case errdefs.IsNotFound(cat):
		return &Error{What: msg, Hint: "see 'wasmorch get workloads'", Cause: cat}
	case errdefs.IsInvalidArgument(cat):
		return &Error{What: "the server refused the request: " + msg, Hint: "fix it and try again (see 'wasmorch " + c.Command + " --help')", Cause: cat}
	case errdefs.IsAlreadyExists(cat):
		return &Error{What: msg, Hint: "choose another --name, or 'wasmorch delete' the existing workload first", Cause: cat}
	case errdefs.IsFailedPrecondition(cat):
		return &Error{What: msg, Hint: "see 'wasmorch get nodes' and 'wasmorch get workloads'", Cause: cat}
	case errdefs.IsConflict(cat):
		return &Error{What: msg, Hint: "it changed while this ran; try again", Cause: cat}
	case errdefs.IsUnavailable(cat):
		return &Error{What: fmt.Sprintf("the wasmorch server at %s is not ready: %s", c.addr, msg), Hint: "try again in a moment", Cause: cat}
	case code == codes.ResourceExhausted:
		// A message over gRPC's limit (a server older than this client's
		// own check, or an answer over the client's), or the server out of
		// a resource: waiting does not make either smaller.
		return &Error{What: fmt.Sprintf("the wasmorch server at %s refused the request: %s", c.addr, msg), Hint: "make it smaller: long environment values, arguments and files belong in a config or secret", Cause: err}
	case code == codes.Unimplemented:
		return &Error{What: fmt.Sprintf("the wasmorch server at %s does not support this: %s", c.addr, msg), Hint: "use a client and server of the same version ('wasmorch version')", Cause: err}
	}
	return &Error{What: fmt.Sprintf("the wasmorch server at %s failed: %s", c.addr, msg), Hint: "see the server's log", Cause: err}
}

// MaxRequestBytes is the largest request a wasmorch server takes in one
// message (the API's grpc.MaxRecvMsgSize, controlplane/api.MaxMessageBytes).
// A larger one is refused before it is sent: gRPC would only say
// ResourceExhausted, which reads like a server short of something.
const MaxRequestBytes = 4 << 20

// tooLarge is the error for a request of n bytes over MaxRequestBytes.
func tooLarge(req proto.Message, n int) error {
	size := func(b int) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	limit := fmt.Sprintf("more than the %d MiB a wasmorch server takes in one request", MaxRequestBytes>>20)
	switch r := req.(type) {
	case *wasmorchv1.ApplyWorkloadRequest:
		return &Error{
			What: fmt.Sprintf("the spec of workload %s is %s, %s", r.GetName(), size(n), limit),
			Hint: "move long environment values, arguments or files into a config or secret (docs/manifests.md)",
		}
	case *wasmorchv1.SetConfigRequest:
		return &Error{What: fmt.Sprintf("config %s is %s, %s", r.GetName(), size(n), limit), Hint: "split it into several configs"}
	case *wasmorchv1.SetSecretRequest:
		return &Error{What: fmt.Sprintf("secret %s is %s, %s", r.GetName(), size(n), limit), Hint: "split it into several secrets"}
	}
	return &Error{What: fmt.Sprintf("the request is %s, %s", size(n), limit), Hint: "make it smaller"}
}
