package wasmrt

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"
)

// pageSize is the size of a WebAssembly memory page.
const pageSize = 64 << 10

// maxMemoryBytes is the most a 32-bit WebAssembly memory can address.
const maxMemoryBytes = 65536 * pageSize

// Config configures a Runtime. cmd/ fills it; nothing here reads flags.
type Config struct {
	// CacheDir holds wazero's compiled code, so that a restarted worker loads
	// modules instead of compiling them again. Empty keeps compiled code in
	// memory only.
	CacheDir string `json:"cacheDir" yaml:"cacheDir"`
	// DefaultMemoryBytes is the memory limit of an instance whose spec asks
	// for none. It is rounded up to whole 64 KiB pages.
	DefaultMemoryBytes int64 `json:"defaultMemoryBytes" yaml:"defaultMemoryBytes"`
	// CompilationWorkers is how many goroutines compile one module.
	CompilationWorkers int `json:"compilationWorkers" yaml:"compilationWorkers"`
	// Interpreter runs modules in wazero's interpreter even where its
	// compiler works (to compare the two, and to test the interpreter on any
	// machine). Where there is no compiler (32-bit ARM, RISC-V) the
	// interpreter runs them whatever this says.
	Interpreter bool `json:"interpreter" yaml:"interpreter"`
	// Logger receives compile events at Debug level; nil discards them.
	Logger *slog.Logger `json:"-" yaml:"-"`
}

// DefaultConfig returns the configuration a worker starts from.
func DefaultConfig() Config {
	return Config{
		DefaultMemoryBytes: 128 << 20,
		CompilationWorkers: runtime.NumCPU(),
	}
}

// Validate reports every field that is out of range.
func (c Config) Validate() error {
	var errs []error
	if c.DefaultMemoryBytes < pageSize || c.DefaultMemoryBytes > maxMemoryBytes {
		errs = append(errs, fmt.Errorf("defaultMemoryBytes %d is outside [64 KiB, 4 GiB]", c.DefaultMemoryBytes))
	}
	if c.CompilationWorkers < 1 {
		errs = append(errs, fmt.Errorf("compilationWorkers %d must be at least 1", c.CompilationWorkers))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("wasm runtime config: %w", err)
	}
	return nil
}

// memoryPages converts a memory limit in bytes to whole pages; zero or less
// means the default, and anything above 4 GiB is capped there.
func (c Config) memoryPages(bytes int64) uint32 {
	if bytes <= 0 {
		bytes = c.DefaultMemoryBytes
	}
	if bytes > maxMemoryBytes {
		bytes = maxMemoryBytes
	}
	return uint32((bytes + pageSize - 1) / pageSize)
}
