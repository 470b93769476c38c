// Package wasmrt runs WebAssembly (WASI preview 1) instances with wazero for
// the worker: it compiles each module once per memory limit, keeps the
// compiled code in a file cache across restarts, and runs every instance in
// its own sandbox on its own goroutine. It implements runtimeapi.Runtime; Validate
// and Imports inspect a module before anything is stored or scheduled.
package wasmrt

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

var _ runtimeapi.Runtime = (*Runtime)(nil)

// errRuntimeClosed is the cause given to instances stopped by Close.
var errRuntimeClosed = errors.New("stopped: the wasm runtime closed")

// Runtime is the wazero runtime of a worker. Its methods are safe for
// concurrent use.
type Runtime struct {
	cfg    Config
	log    *slog.Logger
	engine string // EngineCompiler or EngineInterpreter (engine.go)

	cache wazero.CompilationCache
	// moduleConfig holds what every instance shares; Start adds the rest.
	moduleConfig wazero.ModuleConfig

	// base is the parent of every instance's context; Close cancels it.
	base       context.Context
	cancelBase context.CancelCauseFunc
	running    sync.WaitGroup // one per started instance, until OnExit returns

	// wazeroMu guards wazeros and wasi. One wazero.Runtime per memory limit,
	// because wazero sets the limit per runtime; they share the engine, so
	// machine code is compiled once whatever the limit.
	wazeroMu sync.Mutex
	wazeros  map[wazeroKey]wazero.Runtime
	wasi     map[string]api.FunctionDefinition // what WASI exports, by name

	mu       sync.Mutex
	modules  map[moduleKey]*module
	closed   bool
	freeOnce sync.Once

	compiles atomic.Int64 // compilations started; tests read it

	// memory lends function requests their linear memory (memory.go).
	memory memoryPool
	// imageAbove: a function module whose initial memory is larger gets
	// a memory image (memimage.go); smaller ones take pooled memories.
	// Tests lower it.
	imageAbove uint64
}

// New validates cfg, filling zero fields from DefaultConfig, and returns a
// runtime ready to prepare and start modules.
func New(ctx context.Context, cfg Config) (_ *Runtime, err error) {
	def := DefaultConfig()
	if cfg.DefaultMemoryBytes == 0 {
		cfg.DefaultMemoryBytes = def.DefaultMemoryBytes
	}
	if cfg.CompilationWorkers == 0 {
		cfg.CompilationWorkers = def.CompilationWorkers
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}

	cache := wazero.NewCompilationCache()
	if cfg.CacheDir != "" {
		if cache, err = wazero.NewCompilationCacheWithDir(cfg.CacheDir); err != nil {
			return nil, fmt.Errorf("wasm runtime: compilation cache in %s: %w", cfg.CacheDir, err)
		}
	}
	base, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	r := &Runtime{
		cfg:    cfg,
		log:    log,
		engine: engineFor(cfg),
		cache:  cache,
		moduleConfig: wazero.NewModuleConfig().
			WithName("").         // anonymous, so that any number of instances coexist
			WithStartFunctions(). // run calls _start itself, to tell its errors apart
			WithSysWalltime().
			WithSysNanotime().
			WithRandSource(rand.Reader),
		base:       base,
		cancelBase: cancel,
		wazeros:    map[wazeroKey]wazero.Runtime{},
		modules:    map[moduleKey]*module{},
		imageAbove: maxPooledMemory,
	}
	defer func() {
		if err != nil {
			_ = r.free(ctx) // Don't leak the cache on error.
		}
	}()
	// The runtime for the default limit is the one nearly every instance
	// uses; creating it now also learns what WASI provides.
	if _, err = r.wazeroFor(ctx, cfg.memoryPages(0)); err != nil {
		return nil, err
	}
	if r.engine == EngineInterpreter && !cfg.Interpreter {
		log.Info("wazero has no compiler for this machine: its interpreter runs modules, more slowly", "platform", runtime.GOOS+"/"+runtime.GOARCH)
	}
	return r, nil
}

// Name implements runtimeapi.Runtime.
func (r *Runtime) Name() string { return "wasm" }

// wazeroFor returns the wazero runtime for a memory limit, creating it with
// WASI on first use.
func (r *Runtime) wazeroFor(ctx context.Context, pages uint32) (wazero.Runtime, error) {
	return r.wazeroOf(ctx, wazeroKey{r.engine, pages})
}

// runtimeConfig is the configuration of a wazero runtime, but for its
// compile cache.
func runtimeConfig(key wazeroKey) wazero.RuntimeConfig {
	return newRuntimeConfig(key.engine).
		WithCloseOnContextDone(true). // lets Stop end a guest in a busy loop
		WithMemoryLimitPages(key.pages)
}

// wazeroKey names a wazero runtime: its engine (the runtime's own, or the
// interpreter for a module the compiler fails: module.go) and memory limit.
type wazeroKey struct {
	engine string
	pages  uint32
}

func (r *Runtime) wazeroOf(ctx context.Context, key wazeroKey) (wazero.Runtime, error) {
	r.wazeroMu.Lock()
	defer r.wazeroMu.Unlock()
	if r.wazeros == nil {
		return nil, errors.New("the wasm runtime is closed")
	}
	if wz, ok := r.wazeros[key]; ok {
		return wz, nil
	}
	ctx = context.WithoutCancel(ctx)
	wz := wazero.NewRuntimeWithConfig(ctx, runtimeConfig(key).WithCompilationCache(r.cache))
	if err := instantiateWASI(ctx, wz); err != nil {
		_ = wz.Close(ctx)
		return nil, fmt.Errorf("wasm runtime: instantiate WASI: %w", err)
	}
	if r.wasi == nil {
		r.wasi = wz.Module(wasi_snapshot_preview1.ModuleName).ExportedFunctionDefinitions()
	}
	r.wazeros[key] = wz
	return wz, nil
}

// Close stops every instance, waits for them to exit (or for ctx), and frees
// compiled code. It is safe to call more than once.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	r.cancelBase(errRuntimeClosed)

	exited := make(chan struct{})
	go func() {
		r.running.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-ctx.Done():
		return fmt.Errorf("wasm runtime close: instances still running: %w", context.Cause(ctx))
	}
	return r.free(ctx)
}

// free closes the compiled modules, the wazero runtimes and the cache, once.
func (r *Runtime) free(ctx context.Context) (err error) {
	ctx = context.WithoutCancel(ctx)
	r.freeOnce.Do(func() {
		r.mu.Lock()
		r.closed = true
		var unused []*module
		for _, m := range r.modules {
			m.released = true
			if m.unusedLocked() {
				unused = append(unused, m)
			}
		}
		clear(r.modules)
		r.mu.Unlock()
		for _, m := range unused {
			m.close()
		}

		r.wazeroMu.Lock()
		for _, wz := range r.wazeros {
			err = errors.Join(err, wz.Close(ctx))
		}
		r.wazeros = nil
		r.wazeroMu.Unlock()
		err = errors.Join(err, r.cache.Close(ctx))
	})
	if err != nil {
		return fmt.Errorf("wasm runtime close: %w", err)
	}
	return nil
}

// Start implements runtimeapi.Runtime. It compiles the module if needed and
// returns as soon as the instance's goroutine is launched. A module that
// cannot run (invalid, imports what the runtime lacks, needs more memory than
// its limit) still "starts": it exits at once through OnExit and Done, with a
// permanent Exit. Only problems of the worker itself (module file missing,
// runtime closed, ctx done while compiling) are returned as
// *runtimeapi.StartError.
func (r *Runtime) Start(ctx context.Context, spec runtimeapi.InstanceSpec) (runtimeapi.Instance, error) {
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	m, err := r.acquire(ctx, spec.Artifact, spec.MemoryBytes, true, false)
	var serr *runtimeapi.StartError
	if errors.As(err, &serr) && serr.Exit.Permanent {
		return r.launch(spec, nil, serr.Exit)
	} else if err != nil {
		return nil, err
	}
	return r.launch(spec, m, runtimeapi.Exit{})
}

// launch starts the goroutine of one instance: it runs m, or, when m is nil,
// exits at once with unrunnable.
func (r *Runtime) launch(spec runtimeapi.InstanceSpec, m *module, unrunnable runtimeapi.Exit) (runtimeapi.Instance, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		if m != nil {
			r.drop(m)
		}
		return nil, startError(false, "the wasm runtime is closed")
	}
	r.running.Add(1) // under mu, so that Close cannot be waiting already
	r.mu.Unlock()

	ctx, cancel := context.WithCancelCause(r.base)
	i := &instance{
		id:      spec.ID,
		ctx:     ctx,
		cancel:  cancel,
		done:    make(chan struct{}),
		onExit:  spec.OnExit,
		started: time.Now(),
	}
	if len(spec.Listeners) > 0 {
		i.accepting = make(chan struct{}) // sock.go
	}
	if m == nil {
		go i.finish(r, nil, unrunnable)
	} else {
		go i.run(r, m, spec)
	}
	return i, nil
}

func checkSpec(spec runtimeapi.InstanceSpec) error {
	if spec.ID == "" {
		return startError(true, "instance spec has no ID")
	}
	for _, a := range spec.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return startError(true, fmt.Sprintf("argument %q contains a NUL byte", a))
		}
	}
	for _, kv := range spec.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.IndexByte(kv, 0) >= 0 {
			return startError(true, fmt.Sprintf("environment entry %q is not KEY=VALUE", kv))
		}
	}
	return nil
}

// startError is a StartError for a problem of the worker or of the spec.
func startError(permanent bool, msg string) *runtimeapi.StartError {
	return &runtimeapi.StartError{Exit: runtimeapi.Exit{
		Code:      NotStartedExitCode,
		Reason:    runtimeapi.ReasonStartError,
		Message:   msg,
		Permanent: permanent,
		At:        time.Now(),
	}}
}

// readModule reads an artifact's bytes.
func readModule(a runtimeapi.Artifact) ([]byte, *runtimeapi.StartError) {
	bin, err := os.ReadFile(a.Path)
	if err != nil {
		return nil, startError(false, fmt.Sprintf("read module %s: %v", a.Digest, err))
	}
	return bin, nil
}
