package wasmrt

import (
	"context"
	"strings"

	"github.com/tetratelabs/wazero"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

// Validate checks that wasm is a valid WebAssembly module and a WASI command
// (it exports _start), the way the control plane and the CLI do before
// storing anything. It compiles with wazero's interpreter, which validates
// fully but generates no machine code, so it is quick. Imports are not
// checked: a module the wasm runtime cannot satisfy may still run elsewhere.
// Errors are in errdefs' InvalidArgument category.
func Validate(ctx context.Context, wasm []byte) error {
	return inspect(ctx, wasm, func(code wazero.CompiledModule) error {
		if err := checkCommand(code); err != nil {
			return errdefs.Invalidf("%v", err)
		}
		return nil
	})
}

// Imports returns the functions wasm imports, as "module.name", in the order
// the module declares them.
func Imports(ctx context.Context, wasm []byte) ([]string, error) {
	var names []string
	err := inspect(ctx, wasm, func(code wazero.CompiledModule) error {
		for _, fn := range code.ImportedFunctions() {
			mod, name, _ := fn.Import()
			names = append(names, mod+"."+name)
		}
		return nil
	})
	return names, err
}

// inspect compiles wasm with a throwaway interpreter runtime, without a
// memory limit, and calls fn with the result.
func inspect(ctx context.Context, wasm []byte, fn func(wazero.CompiledModule) error) error {
	wz := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer wz.Close(ctx)
	code, err := wz.CompileModule(ctx, wasm)
	if err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return errdefs.Invalidf("invalid module: %s", firstLine(err))
	}
	return fn(code)
}

// firstLine keeps the first line of an error: wazero appends stack traces
// to some, and an Exit's message is one line.
func firstLine(err error) string {
	msg, _, _ := strings.Cut(err.Error(), "\n")
	return msg
}
