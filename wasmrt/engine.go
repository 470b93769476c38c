package wasmrt

import (
	"runtime"

	"github.com/tetratelabs/wazero"
	"golang.org/x/sys/cpu"
)

// The engines that run modules: wazero's optimizing compiler (machine code,
// cached on disk across restarts) where it exists, its interpreter
// elsewhere.
const (
	EngineCompiler    = "compiler"
	EngineInterpreter = "interpreter"
)

// compilerSupported says whether wazero's compiler runs here, by the rule
// wazero applies to its own default (internal/platform.CompilerSupported,
// which it does not export): amd64 with SSE4.1 or arm64, on an OS it
// generates code for, where memory can be mapped executable. On 32-bit
// ARM (armv7) and RISC-V it cannot.
func compilerSupported() bool {
	switch runtime.GOOS {
	case "linux", "darwin", "freebsd", "netbsd", "windows":
	default:
		return false
	}
	switch {
	case runtime.GOARCH == "arm64":
	case runtime.GOARCH == "amd64" && cpu.X86.HasSSE41:
	default:
		return false
	}
	return executableMemory()
}

// engineFor is the engine a runtime of cfg uses.
func engineFor(cfg Config) string {
	if cfg.Interpreter || !compilerSupported() {
		return EngineInterpreter
	}
	return EngineCompiler
}

// newRuntimeConfig is wazero's configuration for engine.
func newRuntimeConfig(engine string) wazero.RuntimeConfig {
	if engine == EngineInterpreter {
		return wazero.NewRuntimeConfigInterpreter()
	}
	return wazero.NewRuntimeConfigCompiler()
}

// Engine is the engine that runs this runtime's modules: EngineCompiler
// or EngineInterpreter.
func (r *Runtime) Engine() string { return r.engine }
