package wasmrt

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// compiledEntry prepares hello.wasm in a runtime whose compile cache is
// dir, closes it, and returns the cache's one file and its content.
func compiledEntry(t *testing.T, dir string) (path string, content []byte) {
	t.Helper()
	if !compilerSupported() {
		t.Skip("wazero has no compiler here")
	}
	r, err := New(context.Background(), Config{CacheDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Prepare(context.Background(), testArtifact(t, "hello.wasm"), 0); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "wazero-*", "*"))
	if len(files) != 1 {
		t.Fatalf("compile cache holds %v, want one entry", files)
	}
	content, err = os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	return files[0], content
}

// runHello starts hello.wasm in r and checks that it ran to a clean exit.
func runHello(t *testing.T, r *Runtime) {
	t.Helper()
	stdout := newOutput()
	inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{ID: "h", Artifact: testArtifact(t, "hello.wasm"), Stdout: stdout})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if exit := waitExit(t, inst); exit.Code != 0 || exit.Reason != runtimeapi.ReasonCompleted {
		t.Fatalf("exit = %+v", exit)
	}
}

// A compile-cache entry cut short or corrupted on disk made wazero's
// compiler fail the module on every start (it neither ignores nor deletes
// such an entry), and the worker retried for ever: the module is valid.
// The runtime now compiles it afresh and replaces the entry.
func TestAnUnreadableCompileCacheEntryIsReplaced(t *testing.T) {
	dir := t.TempDir()
	entry, good := compiledEntry(t, dir)
	bad := bytes.Clone(good)
	for i := len(bad) / 2; i < len(bad)/2+64; i++ {
		bad[i] ^= 0xff
	}
	if err := os.WriteFile(entry, bad, 0o644); err != nil {
		t.Fatal(err)
	}

	r := newTestRuntime(t, Config{CacheDir: dir})
	runHello(t, r)
	got, err := os.ReadFile(entry)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(got, bad) {
		t.Fatal("the corrupted entry is still in the compile cache")
	}
	r.wazeroMu.Lock()
	_, interpreted := r.wazeros[wazeroKey{EngineInterpreter, r.cfg.memoryPages(0)}]
	r.wazeroMu.Unlock()
	if interpreted {
		t.Error("the module went to the interpreter although the compiler could compile it")
	}
	leftovers, _ := filepath.Glob(filepath.Join(dir, ".recompile-*"))
	if len(leftovers) != 0 {
		t.Errorf("left behind: %v", leftovers)
	}

	// A runtime started afterwards reads the replaced entry as it is.
	r2 := newTestRuntime(t, Config{CacheDir: dir})
	runHello(t, r2)
	if again, _ := os.ReadFile(entry); !bytes.Equal(again, got) {
		t.Error("the replaced entry was rewritten by the next runtime: it was not readable")
	}
}

// When the compiler cannot compile a valid module and that is not a cache
// entry it can replace, the module runs in the interpreter rather than
// failing for ever. Here wazero reads a directory where the entry's file
// should be (its error is not the module's, and the entry cannot be
// replaced), the one way to fail wazero v1.12's compiler on amd64 with a
// valid module: its own limits are arm64's.
func TestAModuleTheCompilerFailsRunsInTheInterpreter(t *testing.T) {
	dir := t.TempDir()
	entry, _ := compiledEntry(t, dir)
	if err := os.Remove(entry); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(entry, "in-the-way"), 0o755); err != nil {
		t.Fatal(err)
	}

	r := newTestRuntime(t, Config{CacheDir: dir})
	runHello(t, r)
	r.wazeroMu.Lock()
	_, interpreted := r.wazeros[wazeroKey{EngineInterpreter, r.cfg.memoryPages(0)}]
	r.wazeroMu.Unlock()
	if !interpreted {
		t.Error("the module ran, but not in the interpreter: what failed the compiler?")
	}
}
