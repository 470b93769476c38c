package wasmrt

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// StopExitCode is the exit code recorded for an instance ended by Stop or
// Close: 128+SIGKILL, because WASI preview 1 has no signals, so a guest is
// never asked to stop, only ended where it stands.
const StopExitCode = 137

// NotStartedExitCode is the exit code recorded for an instance whose guest
// never ran: its module cannot run here (see Start), or Start failed.
const NotStartedExitCode = -1

// errStopped is the cause given to an instance ended by Stop.
var errStopped = errors.New("stopped by the worker")

// instance is one running module. Everything else it needs lives on its
// goroutine's stack or in wazero, to keep a parked instance small.
type instance struct {
	id     string
	ctx    context.Context // canceled by Stop and by Runtime.Close
	cancel context.CancelCauseFunc
	done   chan struct{}
	onExit func(runtimeapi.Exit)
	exit   runtimeapi.Exit // written before done is closed

	timer *time.Timer // reused by sleep; only the instance's goroutine uses it

	// observe: what Usage reports, written by the instance's goroutine.
	started       time.Time    // set before the goroutine starts
	slept         atomic.Int64 // nanoseconds spent in sleep
	sleepingSince atomic.Int64 // unix nano when the current sleep began, 0 when awake
	memory        atomic.Int64 // bytes of linear memory

	// mem is the linear memory Allocate gave, freed by finish: wazero
	// frees it when the module closes, except when its watcher closed the
	// module first and the guest then ended by a panic (a stopped sleep).
	mem experimental.LinearMemory

	accepting chan struct{} // a Wasm service's: see Accepting (sock.go)
	socks     *sockets      // a Wasm service's, set by its goroutine; finish closes them
}

var _ runtimeapi.Measured = (*instance)(nil)

// Usage reports the time the guest has run rather than slept since it
// started (what a busy guest costs a core; it includes time it waited to
// be scheduled on a loaded node) and its linear memory.
func (i *instance) Usage() runtimeapi.Usage {
	now := time.Now()
	busy := now.Sub(i.started) - time.Duration(i.slept.Load())
	if since := i.sleepingSince.Load(); since != 0 {
		busy -= now.Sub(time.Unix(0, since))
	}
	return runtimeapi.Usage{CPU: max(busy, 0), MemoryBytes: i.memory.Load()}
}

// Allocate implements experimental.MemoryAllocator: the instance's linear
// memory is a mapping of its own where the host allows
// (instmem_linux.go), else a trackedMemory. Either records its size on
// the instance.
func (i *instance) Allocate(capacity, maxBytes uint64) experimental.LinearMemory {
	i.mem = mapInstanceMemory(i, maxBytes)
	if i.mem == nil {
		i.mem = &trackedMemory{buf: make([]byte, 0, capacity), max: maxBytes, i: i}
	}
	return i.mem
}

// trackedMemory is a linear memory on the Go heap that records its size
// on its instance, as wazero's own grows (by append, within the capacity
// first).
type trackedMemory struct {
	buf []byte
	max uint64
	i   *instance
}

// Reallocate implements experimental.LinearMemory.
func (m *trackedMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
	} else {
		m.buf = append(m.buf, make([]byte, size-uint64(len(m.buf)))...)
	}
	m.i.memory.Store(int64(size))
	return m.buf
}

// Free implements experimental.LinearMemory.
func (m *trackedMemory) Free() {
	m.buf = nil
	m.i.memory.Store(0)
}

func (i *instance) ID() string            { return i.id }
func (i *instance) Done() <-chan struct{} { return i.done }

// Exit reports how the instance ended, or the zero Exit while it runs.
func (i *instance) Exit() runtimeapi.Exit {
	select {
	case <-i.done:
		return i.exit
	default:
		return runtimeapi.Exit{}
	}
}

// Stop ends the instance at once: WASI preview 1 has no way to ask a guest
// to stop, so grace is not used. Canceling the instance's context makes
// wazero close the module at the guest's next function call or loop
// iteration, and cuts short a sleep in poll_oneoff. If ctx ends first, Stop
// returns a Stopped exit that says the instance had not exited yet; Done
// still tells when it does.
func (i *instance) Stop(ctx context.Context, _ time.Duration) runtimeapi.Exit {
	i.cancel(errStopped)
	select {
	case <-i.done:
		return i.exit
	case <-ctx.Done():
		return runtimeapi.Exit{
			Code:    StopExitCode,
			Reason:  runtimeapi.ReasonStopped,
			Message: fmt.Sprintf("stop requested, but instance %s had not exited yet: %v", i.id, context.Cause(ctx)),
			At:      time.Now(),
		}
	}
}

// run is the instance's goroutine: it instantiates m, runs _start until the
// guest returns, exits or is stopped, and finishes the instance.
func (i *instance) run(r *Runtime, m *module, spec runtimeapi.InstanceSpec) {
	cfg := r.moduleConfig.
		WithArgs(append([]string{spec.ID}, spec.Args...)...).
		WithNanosleep(i.sleep)
	if spec.Stdout != nil {
		cfg = cfg.WithStdout(spec.Stdout)
	}
	if spec.Stderr != nil {
		cfg = cfg.WithStderr(spec.Stderr)
	}
	ctx := i.ctx
	var fsc wazero.FSConfig
	if len(spec.Mounts) > 0 {
		st := &fsState{}
		var err error
		if fsc, err = fsConfig(spec.Files, spec.Mounts, st); err != nil {
			i.finish(r, m, runtimeapi.Exit{Code: NotStartedExitCode, Reason: runtimeapi.ReasonStartError, Message: "mounts: " + err.Error()})
			return
		}
		ctx = withFSState(ctx, st)
	} else if len(spec.Files) > 0 {
		fsc = filesConfig(spec.Files)
	}
	guest := withGuest(ctx, spec.Env, i.sleep)
	if len(spec.Listeners) > 0 { // a Wasm service (sock.go)
		first := int32(3 + preopenCount(spec.Files, spec.Mounts))
		socks, err := newSockets(i, spec.Listeners, first)
		if err != nil {
			i.finish(r, m, runtimeapi.Exit{Code: NotStartedExitCode, Reason: runtimeapi.ReasonStartError, Message: err.Error()})
			return
		}
		i.socks = socks
		fsc = reserveListenerFDs(fsc, len(spec.Listeners))
		env := append(slices.Clip(spec.Env), listenFDEnv+"="+strconv.Itoa(int(first)))
		guest = withGuestSockets(ctx, env, i.sleep, socks)
	}
	if fsc != nil {
		cfg = cfg.WithFSConfig(fsc)
	}

	mod, err := m.wz.InstantiateModule(experimental.WithMemoryAllocator(ctx, i), m.code, cfg)
	if err != nil {
		i.finish(r, m, i.exitFrom(err, "instantiate: "))
		return
	}
	guestProcs.enter()
	_, err = mod.ExportedFunction("_start").Call(guest)
	guestProcs.leave()
	_ = mod.Close(context.WithoutCancel(i.ctx))
	i.finish(r, m, i.exitFrom(err, ""))
}

// finish closes a service's sockets, records the exit, lets go of the
// module, tells the supervisor and closes done, in that order: once the
// instance is done, nothing listens for it.
func (i *instance) finish(r *Runtime, m *module, exit runtimeapi.Exit) {
	defer r.running.Done()
	if i.socks != nil {
		i.socks.close()
	}
	if m != nil {
		r.drop(m)
	}
	if i.mem != nil {
		i.mem.Free() // a no-op if wazero freed it; nothing runs on it any more
	}
	i.cancel(nil) // frees the context; a no-op if already stopped
	exit.At = time.Now()
	i.exit = exit
	if i.onExit != nil {
		i.onExit(exit)
	}
	close(i.done)
}

// exitFrom maps how _start (or instantiation, with a prefix for the
// message) ended to an Exit.
func (i *instance) exitFrom(err error, prefix string) runtimeapi.Exit {
	if err == nil {
		return runtimeapi.Exit{Code: 0, Reason: runtimeapi.ReasonCompleted}
	}
	var exitErr *sys.ExitError
	if errors.As(err, &exitErr) {
		code := exitErr.ExitCode()
		switch {
		case code == sys.ExitCodeContextCanceled && i.ctx.Err() != nil:
			return runtimeapi.Exit{Code: StopExitCode, Reason: runtimeapi.ReasonStopped, Message: context.Cause(i.ctx).Error()}
		case code == 0:
			return runtimeapi.Exit{Code: 0, Reason: runtimeapi.ReasonCompleted}
		default:
			return runtimeapi.Exit{Code: int32(code), Reason: runtimeapi.ReasonError,
				Message: fmt.Sprintf("exited with code %d", int32(code))}
		}
	}
	if prefix != "" {
		// Imports and memory were checked when compiling, so what is left
		// is a module that cannot be instantiated at all (a table or
		// global import, an element segment out of bounds ...).
		return permanentExit(runtimeapi.ReasonInvalid, prefix+firstLine(err))
	}
	// Anything else that ends a call is a trap: a wasm runtime error, or a
	// host function that panicked.
	return runtimeapi.Exit{Code: runtimeapi.TrapExitCode, Reason: runtimeapi.ReasonTrap, Message: trapMessage(err)}
}

// sleep is the instance's nanosleep (what poll_oneoff on a clock calls): a
// real sleep, like wazero's WithSysNanosleep, that Stop cuts short, so that
// stopping a guest that sleeps for an hour does not take one. A cut-short
// sleep ends the guest there, as proc_exit does, rather than letting it run
// on until wazero notices the canceled context.
func (i *instance) sleep(ns int64) {
	guestProcs.leave() // a sleeping guest needs no P
	defer guestProcs.enter()
	if ns > 0 {
		d := time.Duration(ns)
		if i.timer == nil {
			i.timer = time.NewTimer(d)
		} else {
			i.timer.Reset(d)
		}
		began := time.Now()
		i.sleepingSince.Store(began.UnixNano())
		select {
		case <-i.timer.C:
		case <-i.ctx.Done():
			i.timer.Stop()
		}
		i.slept.Add(int64(time.Since(began)))
		i.sleepingSince.Store(0)
	}
	// Also after a sleep that ended: when both were ready, select may have
	// taken the timer although the instance was stopped before.
	if i.ctx.Err() != nil {
		panic(sys.NewExitError(sys.ExitCodeContextCanceled))
	}
}

// trapMessage is the first line of a trap's error, which names the trap,
// and the innermost frame of the wasm stack trace wazero appends, if any:
// "wasm error: unreachable (at .$0())".
func trapMessage(err error) string {
	msg, trace, _ := strings.Cut(err.Error(), "\nwasm stack trace:\n\t")
	msg, _, _ = strings.Cut(msg, "\n")
	if frame, _, _ := strings.Cut(trace, "\n"); frame != "" {
		msg += " (at " + strings.TrimSpace(frame) + ")"
	}
	return msg
}
