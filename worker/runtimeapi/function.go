package runtimeapi

import (
	"context"
	"io"
	"net/http"
	"time"
)

// FunctionRuntime is a Runtime that can also serve HTTP functions: an
// artifact prepared once per revision, then one fresh sandbox per request.
// The worker's function server only ever talks to this interface, so that
// a container runtime can serve functions too.
type FunctionRuntime interface {
	Runtime
	// PrepareFunction readies an artifact for serving requests (compiling
	// it if needed). Its error is a *StartError, as for Prepare. The
	// caller must Close the Function when no replica serves it any more.
	PrepareFunction(ctx context.Context, a Artifact, spec FunctionSpec) (Function, error)
}

// FunctionSpec is what every request of one function shares.
type FunctionSpec struct {
	MemoryBytes int64    // per-request sandbox limit; 0 means the runtime's default
	Env         []string // the workload's "K=V", beside the CGI variables
	// Files are read-only files every request's sandbox sees, by absolute
	// guest path, as InstanceSpec.Files: configs and secrets mounted as
	// files. The runtime prepares them once, not per request.
	Files map[string][]byte
	// ScratchBytes, when positive, gives every request's sandbox a
	// writable /tmp of its own, bounded as InstanceSpec's scratch mount,
	// in a new directory under ScratchDir (an existing directory the
	// worker owns), removed when the request ends (state).
	ScratchBytes int64
	ScratchDir   string
}

// Function serves requests of one prepared revision; it is safe for
// concurrent use.
type Function interface {
	// Serve runs one request in a fresh sandbox and writes the response to
	// w. It returns how the call ended, once the sandbox is gone.
	Serve(ctx context.Context, w http.ResponseWriter, req *FunctionRequest) FunctionResult
	// Close releases what the runtime kept for the function.
	Close()
}

// FunctionRequest is one HTTP request for a function.
type FunctionRequest struct {
	HTTP       *http.Request
	Body       io.Reader     // the (limited) request body; nil for none
	ScriptName string        // the route prefix the request matched, e.g. "/greet"
	PathInfo   string        // the rest of the path, e.g. "/a/b"
	RemoteAddr string        // the original client's address (host:port or host)
	Timeout    time.Duration // the sandbox is stopped after this; 0 means none
	// Logs receives the guest's stderr and the function server's notes
	// about the call (malformed output, timeouts, traps).
	Logs io.Writer
}

// Outcomes of a function call, for metrics and logs.
const (
	OutcomeOK        = "OK"
	OutcomeTimeout   = "Timeout"   // stopped at its timeout (504)
	OutcomeTrap      = "Trap"      // trapped or exited non-zero (500)
	OutcomeMalformed = "Malformed" // output was not CGI (502)
	OutcomeCanceled  = "Canceled"  // the client went away
	OutcomeTooLarge  = "TooLarge"  // the request body was over its limit (413)
	OutcomeBadBody   = "BadBody"   // the request body could not be read: malformed or cut short (400)
	OutcomeError     = "Error"     // the sandbox could not be created (500)
)

// FunctionResult is how one function call ended.
type FunctionResult struct {
	Status  int    // the HTTP status sent, or 0 if none could be
	Outcome string // one of the Outcome* constants
	Message string // detail for logs, empty when OK
	// Truncated is set when the call failed after the response headers
	// were sent: the server should abort the response (http.ErrAbortHandler)
	// so that the client sees it cut short rather than complete.
	Truncated bool
}
