// Package runtimeapi is the contract between the worker and the runtimes
// that execute instances: wasmrt (wazero) today, ctrrt (containerd) later.
// The worker's supervisor only ever talks to a Runtime, so that a runtime
// conformance suite can hold every implementation to the same behaviour.
package runtimeapi

import (
	"context"
	"io"
	"os"
	"time"
)

// Exit reasons recorded on an instance's status.
const (
	ReasonCompleted   = "Completed"   // exited 0
	ReasonError       = "Error"       // exited non-zero
	ReasonTrap        = "Trap"        // the guest trapped (unreachable, out-of-bounds ...)
	ReasonImportError = "ImportError" // an import the runtime does not provide
	ReasonMemoryLimit = "MemoryLimit" // needs more memory than its limit
	ReasonInvalid     = "InvalidModule"
	ReasonStopped     = "Stopped" // stopped by the worker
	ReasonStartError  = "StartError"
	ReasonOOMKilled   = "OOMKilled" // the kernel's OOM killer ended it at its memory limit (containers)
	// edge: the container's image is for another platform (OS and
	// architecture) than the node's: no start on this node gets past it.
	ReasonWrongArch = "WrongArchitecture"
)

// TrapExitCode is the exit code recorded for a trap: 128+SIGABRT, the code
// wasmtime's CLI exits with when its guest traps.
const TrapExitCode = 134

// Artifact is what an instance runs: the bytes, already on the worker's disk
// and verified against their digest.
type Artifact struct {
	Digest string // "sha256:<hex>"
	Path   string // local file with the bytes
	// Ref is an image reference to pull instead (containers); Digest and
	// Path are then empty.
	Ref string
}

// InstanceSpec describes one instance to start.
type InstanceSpec struct {
	ID          string
	Artifact    Artifact
	Args        []string // argv[1:]; the runtime supplies argv[0]
	Env         []string // "K=V"
	MemoryBytes int64    // 0 means the runtime's default
	MilliCPU    int64    // CPU limit in thousandths of a core; 0 means none
	Stdout      io.Writer
	Stderr      io.Writer
	// OnExit, if set, is called exactly once, from the runtime's own
	// goroutine, after the instance has exited. It must not block for long.
	OnExit func(Exit)

	// Restarts is the instance's restart count with this start, which an
	// Adopter keeps with the instance (see Readopted).
	Restarts int32
	// Files are read-only files the instance sees, by absolute guest path
	// (/config/<name>/<key>): configs and secrets mounted as files.
	// Runtimes that cannot mount them refuse a spec that has them.
	Files map[string][]byte
	// Mounts are writable host directories the instance sees (state: its
	// scratch /tmp, volumes). The worker creates and removes the host
	// directories; runtimes that cannot mount them refuse a spec that has
	// them.
	Mounts []Mount
	// Listeners are listening TCP sockets the instance serves on (a Wasm
	// service). The wasm runtime preopens a duplicate of each for the
	// guest, numbered after its preopened directories (fd 3 when it has
	// none), and tells it the first one's number in $LISTEN_FD; the
	// caller keeps these and closes them. The worker gives them to the
	// wasm runtime only.
	Listeners []*os.File
}

// Mount is a host directory an instance sees at GuestPath.
type Mount struct {
	GuestPath string // absolute, e.g. /tmp
	HostPath  string // an existing directory on the node
	ReadOnly  bool
	// LimitBytes, when positive, bounds the bytes of the files in the
	// directory: a write that would take them past it fails with ENOSPC.
	LimitBytes int64
}

// Exit is how an instance ended.
type Exit struct {
	Code      int32
	Reason    string // one of the Reason* constants
	Message   string // human-readable detail, e.g. the trap's message
	Permanent bool   // restarting cannot help (import error, invalid module)
	At        time.Time
}

// Runtime executes instances of one kind of artifact.
type Runtime interface {
	// Name is the runtime's name as nodes advertise it: "wasm", "container".
	Name() string
	// Prepare readies an artifact for starting instances with the given
	// memory limit (compiling a module, for instance). It is idempotent and
	// safe to call concurrently; Start calls it implicitly.
	Prepare(ctx context.Context, a Artifact, memoryBytes int64) error
	// Release lets the runtime drop what Prepare kept for the artifact once
	// no instance of it is wanted any more.
	Release(a Artifact)
	// Start starts an instance and returns once it runs. An error means it
	// never ran (the returned Exit-like error names why); OnExit is then not
	// called.
	Start(ctx context.Context, spec InstanceSpec) (Instance, error)
	// Close stops every instance and frees the runtime.
	Close(ctx context.Context) error
}

// Instance is one started instance.
type Instance interface {
	ID() string
	// Done is closed once the instance has exited and OnExit has returned.
	Done() <-chan struct{}
	// Exit reports how it ended; meaningful after Done is closed.
	Exit() Exit
	// Stop asks the instance to stop, forces it after grace, and returns
	// once it has exited. Safe to call more than once and after exit.
	Stop(ctx context.Context, grace time.Duration) Exit
}

// Adopter is a Runtime whose instances outlive the worker process
// (containers run under containerd, not the worker). Its Start adopts a
// still-running instance of the same ID instead of starting a duplicate,
// and the worker calls RemoveUnwanted once it knows its full desired set,
// so that a restarted worker leaves no orphans behind.
type Adopter interface {
	Runtime
	// RemoveUnwanted removes every instance the runtime holds whose ID is
	// not in keep and that this worker process did not start.
	RemoveUnwanted(ctx context.Context, keep map[string]bool) error
}

// StartError is returned by Start when an instance could not be started;
// it carries the Exit to record.
type StartError struct{ Exit Exit }

func (e *StartError) Error() string { return e.Exit.Reason + ": " + e.Exit.Message }

// Usage is what an instance uses (observe): the CPU time it has had since
// it started, and its memory now.
type Usage struct {
	CPU         time.Duration
	MemoryBytes int64
}

// Measured is an Instance that can say what it uses. For a wasm instance
// the CPU is the time its guest ran rather than slept, and the memory its
// linear memory; for a container, its cgroup's counters.
type Measured interface {
	Instance
	Usage() Usage
}
