package wasmrt

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// moduleKey names one compiled module: wazero bakes the memory limit into
// a compiled module, so the same bytes under two limits are two modules.
// A function's module is compiled without its data segments where a
// memory image holds them (memimage.go), so it is another module again.
type moduleKey struct {
	digest string
	pages  uint32
	imaged bool // with a memory image where one applies
}

// module is a compiled module shared by every instance of one key. The
// first caller that needs it compiles it; the others wait on ready.
type module struct {
	key   moduleKey
	ready chan struct{}

	// Written before ready is closed, read-only after.
	wz   wazero.Runtime
	code wazero.CompiledModule
	err  *runtimeapi.StartError // why it cannot run; Permanent if the module is to blame
	// image is the initial memory that code's instances must start from
	// (code has no data segments then); nil: code is the module as it is.
	image *memImage

	// Guarded by Runtime.mu.
	users    int  // instances holding it, including starts in progress
	compiled bool // compile is done: ready is or is about to be closed
	released bool // no longer in Runtime.modules: close once unused
	closed   bool
}

// unusedLocked reports, once, that m is released, compiled and unused: the
// caller then closes it. Runtime.mu must be held.
func (m *module) unusedLocked() bool {
	if m.released && m.compiled && m.users == 0 && !m.closed {
		m.closed = true
		return true
	}
	return false
}

func (m *module) close() {
	if m.code != nil {
		_ = m.code.Close(context.Background())
	}
	if m.image != nil {
		m.image.close()
	}
}

// Prepare implements runtimeapi.Runtime: it compiles the module for the
// memory limit unless already done. Its error is a *runtimeapi.StartError;
// a Permanent one means no instance of the module can ever run here
// (invalid module, memory minimum above the limit, missing import, no
// _start), and Start would report the same Exit.
func (r *Runtime) Prepare(ctx context.Context, a runtimeapi.Artifact, memoryBytes int64) error {
	_, err := r.acquire(ctx, a, memoryBytes, false, false)
	return err
}

// Release implements runtimeapi.Runtime: the compiled modules of the
// artifact are closed now if no instance runs them, or when the last does.
// A later Prepare or Start compiles again (from the file cache).
func (r *Runtime) Release(a runtimeapi.Artifact) {
	var unused []*module
	r.mu.Lock()
	for key, m := range r.modules {
		if key.digest != a.Digest {
			continue
		}
		delete(r.modules, key)
		m.released = true
		if m.unusedLocked() {
			unused = append(unused, m)
		}
	}
	r.mu.Unlock()
	for _, m := range unused {
		m.close()
	}
}

// acquire returns the compiled module for a and the memory limit, compiling
// it if no one has. With hold, the caller becomes one of its users and must
// call drop when done with it. With imaged, the module has a memory image
// where one applies, and its instances must take their memory from it.
func (r *Runtime) acquire(ctx context.Context, a runtimeapi.Artifact, memoryBytes int64, hold, imaged bool) (*module, error) {
	key := moduleKey{digest: a.Digest, pages: r.cfg.memoryPages(memoryBytes), imaged: imaged}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, startError(false, "the wasm runtime is closed")
	}
	m, ok := r.modules[key]
	if !ok {
		m = &module{key: key, ready: make(chan struct{})}
		r.modules[key] = m
	}
	if hold {
		m.users++
	}
	r.mu.Unlock()

	if !ok {
		r.compile(ctx, m, a)
	} else {
		select {
		case <-m.ready:
		case <-ctx.Done():
			if hold {
				r.drop(m)
			}
			return nil, startError(false, fmt.Sprintf("waiting for module %s to compile: %v", a.Digest, context.Cause(ctx)))
		}
	}
	if m.err != nil {
		if hold {
			r.drop(m)
		}
		if ok && !m.err.Exit.Permanent && ctx.Err() == nil {
			// Another caller's compile failed for its own reason (its
			// context ended ...) and the entry is gone: compile ourselves.
			return r.acquire(ctx, a, memoryBytes, hold, imaged)
		}
		failed := *m.err // a copy, dated now, for a module that failed before
		failed.Exit.At = time.Now()
		return nil, &failed
	}
	return m, nil
}

// drop ends one use of m, closing it if it was released and was the last.
func (r *Runtime) drop(m *module) {
	r.mu.Lock()
	m.users--
	unused := m.unusedLocked()
	r.mu.Unlock()
	if unused {
		m.close()
	}
}

// compile fills m and closes m.ready. Failures the module is not to blame
// for are forgotten, so that the next caller tries again.
func (r *Runtime) compile(ctx context.Context, m *module, a runtimeapi.Artifact) {
	m.wz, m.code, m.image, m.err = r.compileModule(ctx, m.key, a)
	r.mu.Lock()
	if m.err != nil && !m.err.Exit.Permanent && r.modules[m.key] == m {
		delete(r.modules, m.key)
		m.released = true
	}
	m.compiled = true
	unused := m.unusedLocked()
	r.mu.Unlock()
	if unused {
		m.close()
	}
	close(m.ready)
}

// compileModule compiles a's module for key: with key.imaged, without its
// data segments and with the memory image they make, where that applies.
func (r *Runtime) compileModule(ctx context.Context, key moduleKey, a runtimeapi.Artifact) (wazero.Runtime, wazero.CompiledModule, *memImage, *runtimeapi.StartError) {
	bin, serr := readModule(a)
	if serr != nil {
		return nil, nil, nil, serr
	}
	wz, err := r.wazeroFor(ctx, key.pages)
	if err != nil {
		return nil, nil, nil, startError(false, err.Error())
	}
	began := time.Now()
	compiled := bin
	var image *memImage
	if key.imaged {
		image, compiled, err = imageOf(bin, r.imageAbove)
		if err != nil {
			r.log.Debug("wasm module keeps its data segments", "digest", a.Digest, "why", err)
		}
	}
	r.compiles.Add(1)
	code, err := wz.CompileModule(experimental.WithCompilationWorkers(ctx, r.cfg.CompilationWorkers), compiled)
	if err != nil && ctx.Err() == nil && r.engine == EngineCompiler && !errors.As(err, new(syscall.Errno)) &&
		!r.whyNotCompiled(ctx, a, bin, key.pages, err).Exit.Permanent {
		wz, code, err = r.compileDespite(ctx, key.pages, a, compiled, err)
	}
	if err != nil {
		if image != nil {
			image.close()
		}
		if ctx.Err() != nil {
			return nil, nil, nil, startError(false, fmt.Sprintf("compile module %s: %v", a.Digest, context.Cause(ctx)))
		}
		return nil, nil, nil, r.whyNotCompiled(ctx, a, bin, key.pages, err)
	}
	r.log.Debug("compiled wasm module", "digest", a.Digest, "memoryLimitPages", key.pages,
		"bytes", len(bin), "memoryImage", image != nil, "took", time.Since(began))
	if exit, ok := r.whyNotRunnable(code); !ok {
		_ = code.Close(ctx)
		if image != nil {
			image.close()
		}
		return nil, nil, nil, &runtimeapi.StartError{Exit: exit}
	}
	return wz, code, image, nil
}

// compileDespite compiles a module that the compiler failed on although it
// is valid and its memory fits the limit (the interpreter accepted it:
// whyNotCompiled). wazero's compiler fails such a module for one of two
// causes, and wazero says which only in its error's text:
//
//   - its compile cache holds an entry for the module that it cannot read
//     (a file cut short or corrupted on disk: wazero neither ignores nor
//     deletes it, so every later compile failed the same way). The module
//     is compiled afresh into a cache of its own, and the entry it writes
//     replaces the bad one; the compile then reads that.
//   - the compiler cannot compile it at all (its limits: on arm64 a
//     function over 16 MiB of machine code, a module of over a million
//     functions; or a bug of the compiler). The module runs in wazero's
//     interpreter instead, more slowly: every compiling node of this
//     wazero would fail it the same way, so avoiding the node would only
//     leave the workload nowhere to run, while the interpreter runs any
//     valid module (it is the engine of armv7 and riscv64 nodes).
//
// Both are logged as warnings, the interpreter with the compiler's error.
func (r *Runtime) compileDespite(ctx context.Context, pages uint32, a runtimeapi.Artifact, compiled []byte, compileErr error) (wazero.Runtime, wazero.CompiledModule, error) {
	cctx := experimental.WithCompilationWorkers(ctx, r.cfg.CompilationWorkers)
	if wz, err := r.wazeroFor(ctx, pages); err == nil && r.cfg.CacheDir != "" {
		if repaired, rerr := r.repairCacheEntry(cctx, pages, compiled); rerr != nil {
			r.log.Debug("compile cache not repaired", "digest", a.Digest, "err", rerr)
		} else if repaired {
			code, err := wz.CompileModule(cctx, compiled)
			if err == nil {
				r.log.Warn("replaced an unreadable entry of the compile cache", "digest", a.Digest, "cacheDir", r.cfg.CacheDir, "error", firstLine(compileErr))
				return wz, code, nil
			}
			compileErr = err
		}
	}
	wz, err := r.wazeroOf(ctx, wazeroKey{EngineInterpreter, pages})
	if err != nil {
		return nil, nil, err
	}
	code, err := wz.CompileModule(cctx, compiled)
	if err != nil {
		return nil, nil, err
	}
	r.log.Warn("wazero's compiler failed on a valid module: its interpreter runs it, more slowly", "digest", a.Digest, "error", firstLine(compileErr))
	return wz, code, nil
}

// repairCacheEntry compiles a module into a compile cache of its own, in a
// directory under the runtime's, and moves the entry that makes into the
// runtime's cache, replacing the one there. It says whether it did.
func (r *Runtime) repairCacheEntry(ctx context.Context, pages uint32, compiled []byte) (bool, error) {
	tmp, err := os.MkdirTemp(r.cfg.CacheDir, ".recompile-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(tmp)
	cache, err := wazero.NewCompilationCacheWithDir(tmp)
	if err != nil {
		return false, err
	}
	// The same configuration as the runtime's (it is part of the entry's
	// key), but for the cache.
	wz := wazero.NewRuntimeWithConfig(context.WithoutCancel(ctx), runtimeConfig(wazeroKey{EngineCompiler, pages}).WithCompilationCache(cache))
	code, err := wz.CompileModule(ctx, compiled)
	if err == nil {
		_ = code.Close(ctx)
	}
	_ = wz.Close(ctx)
	_ = cache.Close(ctx)
	if err != nil {
		return false, err
	}
	moved := false
	err = filepath.WalkDir(tmp, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(tmp, path)
		dst := filepath.Join(r.cfg.CacheDir, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.Rename(path, dst); err != nil {
			return err
		}
		moved = true
		return nil
	})
	return moved, err
}

// imageOf splits a module whose initial memory is larger than above into
// its memory image and the module without its active data segments; where
// that does not apply, it returns the module as it is, and why.
func imageOf(bin []byte, above uint64) (*memImage, []byte, error) {
	plan, err := planImage(bin)
	if err != nil {
		return nil, bin, err
	}
	if plan.minBytes <= above {
		return nil, bin, fmt.Errorf("%w: an initial memory of %s takes a pooled memory", errNoPlan, bytesText(int64(plan.minBytes)))
	}
	image, err := newMemImage(plan)
	if err != nil {
		return nil, bin, err
	}
	return image, plan.stripped, nil
}

// whyNotCompiled explains a compile failure: the worker could not read or
// write its compile cache (a full disk: try again later), or the module is
// invalid, or it is valid but needs more memory than the limit, which is
// the one thing the limit changes in compilation. Checking that again
// without a limit, with the interpreter, avoids reading wazero's error
// strings. Only the module's own faults are permanent: a transient one
// cached as permanent would outlive its cause until the worker restarts.
func (r *Runtime) whyNotCompiled(ctx context.Context, a runtimeapi.Artifact, bin []byte, pages uint32, compileErr error) *runtimeapi.StartError {
	if errors.As(compileErr, new(syscall.Errno)) {
		return startError(false, fmt.Sprintf("compile module %s: the compile cache: %s", a.Digest, firstLine(compileErr)))
	}
	why := &runtimeapi.StartError{Exit: permanentExit(runtimeapi.ReasonInvalid, "invalid module: "+firstLine(compileErr))}
	_ = inspect(ctx, bin, func(code wazero.CompiledModule) error {
		minimum := minMemoryPages(code)
		if minimum != 0 && minimum <= pages {
			// Valid, and its memory fits: not the module's fault.
			why = startError(false, fmt.Sprintf("compile module %s: %s", a.Digest, firstLine(compileErr)))
			return nil
		}
		why = &runtimeapi.StartError{Exit: permanentExit(runtimeapi.ReasonMemoryLimit,
			fmt.Sprintf("memory minimum %s exceeds the instance limit of %s", pagesText(minimum), pagesText(pages)))}
		return nil
	})
	return why
}

// minMemoryPages is the declared minimum of the module's memory, or 0 if
// the memory is neither imported nor exported (wazero does not show it).
func minMemoryPages(code wazero.CompiledModule) uint32 {
	for _, mem := range code.ImportedMemories() {
		return mem.Min()
	}
	for _, mem := range code.ExportedMemories() {
		return mem.Min()
	}
	return 0
}

func pagesText(pages uint32) string {
	if pages == 0 {
		return "(unknown)"
	}
	return fmt.Sprintf("%d pages (%s)", pages, bytesText(int64(pages)*pageSize))
}

// BytesText writes a memory size as the runtime's messages do: "128 KiB",
// "16 MiB", "1.5 MiB".
func BytesText(n int64) string { return bytesText(n) }

func bytesText(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%d KiB", n>>10)
	}
}

// whyNotRunnable checks what compiling cannot: that the module is a WASI
// command and that the runtime provides every function and memory it
// imports, with the right signature.
func (r *Runtime) whyNotRunnable(code wazero.CompiledModule) (runtimeapi.Exit, bool) {
	if err := checkCommand(code); err != nil {
		return permanentExit(runtimeapi.ReasonInvalid, err.Error()), false
	}
	if problem := unresolvedImports(code, r.wasi); problem != "" {
		return permanentExit(runtimeapi.ReasonImportError, problem), false
	}
	return runtimeapi.Exit{}, true
}

// unresolvedImports says which imports of code the runtime, providing the
// WASI functions wasi, cannot satisfy: the first, and how many more; ""
// when it can satisfy them all.
func unresolvedImports(code wazero.CompiledModule, wasi map[string]api.FunctionDefinition) string {
	var problems []string
	for _, fn := range code.ImportedFunctions() {
		mod, name, _ := fn.Import()
		provided, ok := wasi[name]
		switch {
		case mod != wasi_snapshot_preview1.ModuleName || !ok:
			problems = append(problems, fmt.Sprintf("import %s.%s is not provided by the wasm runtime (WASI preview 1 only)", mod, name))
		case !slices.Equal(fn.ParamTypes(), provided.ParamTypes()) || !slices.Equal(fn.ResultTypes(), provided.ResultTypes()):
			problems = append(problems, fmt.Sprintf("import %s.%s has type %s but the wasm runtime provides %s",
				mod, name, signature(fn), signature(provided)))
		}
	}
	for _, mem := range code.ImportedMemories() {
		mod, name, _ := mem.Import()
		problems = append(problems, fmt.Sprintf("import %s.%s (a memory) is not provided by the wasm runtime (WASI preview 1 only)", mod, name))
	}
	switch len(problems) {
	case 0:
		return ""
	case 1:
		return problems[0]
	default:
		return fmt.Sprintf("%s (and %d more unresolved imports)", problems[0], len(problems)-1)
	}
}

// checkCommand reports whether a module is a WASI command, which is what an
// instance runs.
func checkCommand(code wazero.CompiledModule) error {
	start, ok := code.ExportedFunctions()["_start"]
	if !ok {
		return errors.New("not a WASI command module: no _start export")
	}
	if len(start.ParamTypes()) != 0 || len(start.ResultTypes()) != 0 {
		return fmt.Errorf("not a WASI command module: _start has type %s, want () -> ()", signature(start))
	}
	return nil
}

func signature(fn api.FunctionDefinition) string {
	return "(" + valueTypes(fn.ParamTypes()) + ") -> (" + valueTypes(fn.ResultTypes()) + ")"
}

func valueTypes(ts []api.ValueType) string {
	var s string
	for i, t := range ts {
		if i > 0 {
			s += ", "
		}
		s += api.ValueTypeName(t)
	}
	return s
}

func permanentExit(reason, msg string) runtimeapi.Exit {
	return runtimeapi.Exit{Code: NotStartedExitCode, Reason: reason, Message: msg, Permanent: true, At: time.Now()}
}
