package wasmrt

import (
	"bytes"
	"context"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// componentPreamble starts a WebAssembly component (the component model's
// binary: magic, version 0x0d, layer 1) rather than a core module.
var componentPreamble = []byte{0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00}

// ComponentUnsupported is why the runtime cannot run a component.
const ComponentUnsupported = "a WebAssembly component (component model, WASI preview 2): the wasm runtime runs core modules with WASI preview 1"

// IsComponent reports whether wasm is a WebAssembly component (the
// component model, as WASI preview 2 programs are built) rather than a
// core module.
func IsComponent(wasm []byte) bool {
	return bytes.HasPrefix(wasm, componentPreamble)
}

// Unsupported says why this runtime cannot run wasm, or "" when it can: a
// component rather than a core module, or an import it does not provide
// (it provides WASI preview 1). A workload with a fallback image then runs
// as a container instead. Bytes that are neither a component nor a valid
// module are an error in errdefs' InvalidArgument category.
func Unsupported(ctx context.Context, wasm []byte) (string, error) {
	if IsComponent(wasm) {
		return ComponentUnsupported, nil
	}
	var why string
	err := inspect(ctx, wasm, func(code wazero.CompiledModule) error {
		why = UnresolvedImports(code)
		return nil
	})
	return why, err
}

// UnresolvedImports says which imports of a module (compiled by any wazero
// runtime) this runtime cannot satisfy, or "" when it satisfies them all.
func UnresolvedImports(code wazero.CompiledModule) string {
	return unresolvedImports(code, wasiFunctions())
}

// wasiFunctions are the WASI preview 1 functions the runtime provides.
var wasiFunctions = sync.OnceValue(func() map[string]api.FunctionDefinition {
	ctx := context.Background()
	wz := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer wz.Close(ctx)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, wz); err != nil {
		panic("wasmrt: instantiating WASI preview 1 in an empty runtime: " + err.Error())
	}
	return wz.Module(wasi_snapshot_preview1.ModuleName).ExportedFunctionDefinitions()
})
