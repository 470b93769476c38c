package wasmrt

import (
	"context"
	"slices"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// An instance's environment travels in the context of its _start call, not
// in its wazero.ModuleConfig: every ModuleConfig.WithEnv copies the config
// and its map of keys, so the ~20 CGI variables of a function request cost
// a quadratic number of map inserts per request (a third of a small
// function's call). WASI reads the environment only through environ_get
// and environ_sizes_get, which the runtime's WASI module provides from the
// context instead of wazero's own.

// guestKey is the context key of a guestCall.
type guestKey struct{}

// guestCall is what the runtime's WASI functions need of the guest whose
// _start call they serve.
type guestCall struct {
	env   []string    // the environment, KEY=VALUE
	sleep func(int64) // the instance's nanosleep (poll.go)
	socks *sockets    // a Wasm service's sockets (sock.go), or nil
}

// withGuest returns ctx carrying the environment for the guest's
// environ_* calls and the nanosleep of its poll_oneoff.
func withGuest(ctx context.Context, env []string, sleep func(int64)) context.Context {
	return context.WithValue(ctx, guestKey{}, &guestCall{env: env, sleep: sleep})
}

func guestOf(ctx context.Context) *guestCall {
	if g, _ := ctx.Value(guestKey{}).(*guestCall); g != nil {
		return g
	}
	return &noGuest
}

var noGuest guestCall

// errnoFault is WASI's EFAULT: a pointer outside the guest's memory.
const errnoFault = 21

// instantiateWASI instantiates WASI preview 1 in wz with the environment
// read from the call's context, and poll_oneoff's sleeps without garbage
// (poll.go).
func instantiateWASI(ctx context.Context, wz wazero.Runtime) error {
	b := wz.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(b)
	i32 := api.ValueTypeI32
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(environSizesGet), []api.ValueType{i32, i32}, []api.ValueType{i32}).
		WithParameterNames("result.environc", "result.environv_len").
		WithResultNames("errno").
		Export("environ_sizes_get")
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(environGet), []api.ValueType{i32, i32}, []api.ValueType{i32}).
		WithParameterNames("environ", "environ_buf").
		WithResultNames("errno").
		Export("environ_get")
	defs, err := wazeroWASIFuncs(ctx, wz)
	if err != nil {
		return err
	}
	exportNoSpaceWrappers(b, defs)                         // mounts.go
	if err := exportSocketFunctions(b, defs); err != nil { // sock.go
		return err
	}
	if wazerosPollOneoff {
		_, err := b.Instantiate(ctx)
		return err
	}
	b.NewFunctionBuilder().
		WithGoModuleFunction(api.GoModuleFunc(pollOneoff), []api.ValueType{i32, i32, i32, i32}, []api.ValueType{i32}).
		WithParameterNames("in", "out", "nsubscriptions", "result.nevents").
		WithResultNames("errno").
		Export("poll_oneoff")
	_, err = b.Instantiate(ctx)
	return err
}

// wasiFunc is one of wazero's own WASI functions, as its host module
// defines it: what the runtime's wrappers of it call and export.
type wasiFunc struct {
	fn                      any // api.GoModuleFunction for wazero's usual kind
	params, results         []api.ValueType
	paramNames, resultNames []string
}

// export exports, in b under name, fn with f's signature.
func (f wasiFunc) export(b wazero.HostModuleBuilder, name string, fn api.GoModuleFunction) {
	b.NewFunctionBuilder().
		WithGoModuleFunction(fn, f.params, f.results).
		WithParameterNames(f.paramNames...).
		WithResultNames(f.resultNames...).
		Export(name)
}

// wazeroWASI holds wazero's WASI functions, read once a process: they are
// package-level Go functions of wazero's, the same for every wazero
// runtime, and reading them compiles a host module (its trampolines and
// definitions), which each runtime's instantiateWASI did twice before.
var wazeroWASI struct {
	once  sync.Once
	funcs map[string]wasiFunc
	err   error
}

// wazeroWASIFuncs returns wazero's WASI functions by name, read through wz
// the first time.
func wazeroWASIFuncs(ctx context.Context, wz wazero.Runtime) (map[string]wasiFunc, error) {
	wazeroWASI.once.Do(func() {
		orig := wz.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
		wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(orig)
		compiled, err := orig.Compile(ctx)
		if err != nil {
			wazeroWASI.err = err
			return
		}
		defer compiled.Close(ctx)
		defs := compiled.ExportedFunctions()
		funcs := make(map[string]wasiFunc, len(defs))
		for name, def := range defs {
			funcs[name] = wasiFunc{fn: def.GoFunction(),
				params: slices.Clone(def.ParamTypes()), results: slices.Clone(def.ResultTypes()),
				paramNames: slices.Clone(def.ParamNames()), resultNames: slices.Clone(def.ResultNames())}
		}
		wazeroWASI.funcs = funcs
	})
	return wazeroWASI.funcs, wazeroWASI.err
}

func environOf(ctx context.Context) []string { return guestOf(ctx).env }

// environSizesGet is WASI's environ_sizes_get: the number of variables
// and the bytes their NUL-terminated KEY=VALUE strings take.
func environSizesGet(ctx context.Context, mod api.Module, stack []uint64) {
	env := environOf(ctx)
	size := 0
	for _, kv := range env {
		size += len(kv) + 1
	}
	mem := mod.Memory()
	if mem == nil || !mem.WriteUint32Le(uint32(stack[0]), uint32(len(env))) || !mem.WriteUint32Le(uint32(stack[1]), uint32(size)) {
		stack[0] = errnoFault
		return
	}
	stack[0] = 0
}

// environGet is WASI's environ_get: a pointer per variable at environ,
// each to its NUL-terminated KEY=VALUE string written from environ_buf.
func environGet(ctx context.Context, mod api.Module, stack []uint64) {
	env := environOf(ctx)
	ptrs, buf := uint32(stack[0]), uint32(stack[1])
	mem := mod.Memory()
	if mem == nil {
		stack[0] = errnoFault
		return
	}
	for i, kv := range env {
		if !mem.WriteUint32Le(ptrs+uint32(4*i), buf) || !mem.WriteString(buf, kv) || !mem.WriteByte(buf+uint32(len(kv)), 0) {
			stack[0] = errnoFault
			return
		}
		buf += uint32(len(kv)) + 1
	}
	stack[0] = 0
}
