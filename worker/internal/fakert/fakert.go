// Package fakert is an in-memory runtimeapi.Runtime for the worker's unit
// tests: an instance "runs" until the test makes it exit (or the worker stops
// it), so tests decide every exit and its timing. It uses no goroutines.
package fakert

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

var (
	_ runtimeapi.Runtime  = (*Runtime)(nil)
	_ runtimeapi.Instance = (*Instance)(nil)
)

// StopExitCode is the code an instance stopped by the worker exits with.
const StopExitCode = 137

// Runtime records what the worker asked of it.
type Runtime struct {
	name string

	// Hooks, set before use. PrepareHook runs inside Prepare and may block or
	// fail it; StartHook decides whether Start fails; OnStart runs before
	// Start returns (it may make the instance exit at once); StopHook runs
	// when Stop begins and may block it, as a guest that takes its grace
	// to end.
	PrepareHook func(ctx context.Context, a runtimeapi.Artifact) error
	StartHook   func(spec runtimeapi.InstanceSpec) error
	OnStart     func(*Instance)
	StopHook    func(*Instance)

	mu        sync.Mutex
	instances map[string][]*Instance
	prepared  map[string]int
	released  map[string]int
	closed    bool
}

// New returns a runtime that advertises itself as name.
func New(name string) *Runtime {
	return &Runtime{
		name:      name,
		instances: map[string][]*Instance{},
		prepared:  map[string]int{},
		released:  map[string]int{},
	}
}

// Name implements runtimeapi.Runtime.
func (r *Runtime) Name() string { return r.name }

// Prepare implements runtimeapi.Runtime; it checks the artifact is on
// disk, unless it is an image reference.
func (r *Runtime) Prepare(ctx context.Context, a runtimeapi.Artifact, _ int64) error {
	if _, err := os.Stat(a.Path); a.Ref == "" && err != nil {
		return &runtimeapi.StartError{Exit: runtimeapi.Exit{Reason: runtimeapi.ReasonInvalid, Message: err.Error(), Permanent: true}}
	}
	if r.PrepareHook != nil {
		if err := r.PrepareHook(ctx, a); err != nil {
			return err
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.prepared[a.Digest]++
	return nil
}

// Release implements runtimeapi.Runtime.
func (r *Runtime) Release(a runtimeapi.Artifact) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.released[a.Digest]++
}

// Start implements runtimeapi.Runtime.
func (r *Runtime) Start(_ context.Context, spec runtimeapi.InstanceSpec) (runtimeapi.Instance, error) {
	if r.StartHook != nil {
		if err := r.StartHook(spec); err != nil {
			return nil, err
		}
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, fmt.Errorf("fakert: closed")
	}
	in := &Instance{spec: spec, done: make(chan struct{}), stopHook: r.StopHook}
	r.instances[spec.ID] = append(r.instances[spec.ID], in)
	r.mu.Unlock()
	if r.OnStart != nil {
		r.OnStart(in)
	}
	return in, nil
}

// Close implements runtimeapi.Runtime: it stops every instance.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	var all []*Instance
	for _, runs := range r.instances {
		all = append(all, runs...)
	}
	r.mu.Unlock()
	for _, in := range all {
		in.Stop(ctx, 0)
	}
	return nil
}

// Closed reports whether Close was called.
func (r *Runtime) Closed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// Starts reports how many times instance id was started.
func (r *Runtime) Starts(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.instances[id])
}

// Latest returns the last started run of instance id, or nil.
func (r *Runtime) Latest(id string) *Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	runs := r.instances[id]
	if len(runs) == 0 {
		return nil
	}
	return runs[len(runs)-1]
}

// Running reports how many runs have not exited, over all instances.
func (r *Runtime) Running() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, runs := range r.instances {
		for _, in := range runs {
			if !in.Exited() {
				n++
			}
		}
	}
	return n
}

// Released reports how many times the artifact named digest was released.
func (r *Runtime) Released(digest string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.released[digest]
}

// Instance is one fake run.
type Instance struct {
	spec     runtimeapi.InstanceSpec
	done     chan struct{}
	stopHook func(*Instance)

	mu      sync.Mutex
	exited  bool
	stopped bool
	exit    runtimeapi.Exit
}

// ID implements runtimeapi.Instance.
func (in *Instance) ID() string { return in.spec.ID }

// Spec returns what the instance was started with.
func (in *Instance) Spec() runtimeapi.InstanceSpec { return in.spec }

// Stdout is where the guest's standard output goes.
func (in *Instance) Stdout() io.Writer { return in.spec.Stdout }

// Done implements runtimeapi.Instance.
func (in *Instance) Done() <-chan struct{} { return in.done }

// Exit implements runtimeapi.Instance.
func (in *Instance) Exit() runtimeapi.Exit {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.exit
}

// Exited reports whether the run has ended.
func (in *Instance) Exited() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.exited
}

// Stopped reports whether the run ended because it was stopped.
func (in *Instance) Stopped() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.stopped
}

// Terminate makes the guest exit with e (At defaults to now). It calls
// OnExit from the caller's goroutine; later calls do nothing.
func (in *Instance) Terminate(e runtimeapi.Exit) {
	in.end(e, false)
}

func (in *Instance) end(e runtimeapi.Exit, stopped bool) {
	in.mu.Lock()
	if in.exited {
		in.mu.Unlock()
		return
	}
	if e.At.IsZero() {
		e.At = time.Now()
	}
	in.exited, in.stopped, in.exit = true, stopped, e
	in.mu.Unlock()
	if in.spec.OnExit != nil {
		in.spec.OnExit(e)
	}
	close(in.done)
}

// Stop implements runtimeapi.Instance.
func (in *Instance) Stop(ctx context.Context, _ time.Duration) runtimeapi.Exit {
	if in.stopHook != nil {
		in.stopHook(in)
	}
	in.end(runtimeapi.Exit{Code: StopExitCode, Reason: runtimeapi.ReasonStopped}, true)
	select {
	case <-in.done:
	case <-ctx.Done():
	}
	return in.Exit()
}
