package wasmrt_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/wasmrt"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
	"github.com/wasmorch/wasmorch/worker/runtimeapi/rtconformance"
)

// TestConformance holds wasmrt to the runtime conformance suite, with the
// conformance program built as a Go wasip1 module, run by the engine this
// machine has (the compiler on amd64 and arm64).
func TestConformance(t *testing.T) {
	testConformance(t, false)
}

// TestConformanceInterpreter holds wazero's interpreter, which runs modules
// where there is no compiler (armv7, riscv64), to the same suite on any
// machine.
func TestConformanceInterpreter(t *testing.T) {
	testConformance(t, true)
}

func testConformance(t *testing.T, interpreter bool) {
	if testing.Short() {
		t.Skip("builds and compiles a Go wasip1 module")
	}
	mod := rtconformance.BuildProgram(t, "wasip1", "wasm")
	b, err := os.ReadFile(mod)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	cfg := wasmrt.DefaultConfig()
	cfg.CacheDir = t.TempDir()
	cfg.Interpreter = interpreter
	rt, err := wasmrt.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if interpreter && rt.Engine() != wasmrt.EngineInterpreter {
		t.Fatalf("Engine() = %q with Interpreter set, want %q", rt.Engine(), wasmrt.EngineInterpreter)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := rt.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	rtconformance.Run(t, rtconformance.Harness{
		Runtime:  rt,
		Artifact: runtimeapi.Artifact{Digest: "sha256:" + hex.EncodeToString(sum[:]), Path: mod},
		// A Go guest whose memory.grow fails exits with the Go runtime's
		// fatal-error code 2; other guests trap or fail to instantiate.
		MemoryLimitReasons: []string{runtimeapi.ReasonError, runtimeapi.ReasonTrap, runtimeapi.ReasonMemoryLimit},
	})
}
