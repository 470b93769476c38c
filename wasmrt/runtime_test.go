package wasmrt

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/wasmorch/wasmorch/internal/disktest"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

func TestInstanceExits(t *testing.T) {
	r := newTestRuntime(t, Config{})
	tests := []struct {
		name        string
		module      string
		args, env   []string
		memory      int64
		wantCode    int32
		wantReason  string
		wantMessage string // exact, when set
		permanent   bool
		wantStdout  string // exact, when set
		wantStderr  string // exact, when set
	}{
		{
			name: "hello exits 0 and prints its args and GREETING", module: "hello.wasm",
			args: []string{"one", "two"}, env: []string{"GREETING=hi there", "OTHER=x"},
			wantCode: 0, wantReason: runtimeapi.ReasonCompleted,
			wantStdout: "hello from wasmorch\nargs: one two\nGREETING=hi there\n", wantStderr: "",
		},
		{
			name: "hello without args or env prints only the greeting", module: "hello.wasm",
			wantCode: 0, wantReason: runtimeapi.ReasonCompleted, wantStdout: "hello from wasmorch\n",
		},
		{
			name: "proc_exit(3) is an error exit with its stderr", module: "fail.wasm",
			wantCode: 3, wantReason: runtimeapi.ReasonError, wantMessage: "exited with code 3",
			wantStdout: "", wantStderr: "fail: exiting with code 3\n",
		},
		{
			name: "unreachable is a trap", module: "trap.wasm",
			wantCode: runtimeapi.TrapExitCode, wantReason: runtimeapi.ReasonTrap,
			wantMessage: "wasm error: unreachable (at .$0())",
		},
		{
			name: "a missing import is a permanent import error", module: "badimport.wasm",
			wantCode: NotStartedExitCode, wantReason: runtimeapi.ReasonImportError, permanent: true,
			wantMessage: "import env.does_not_exist is not provided by the wasm runtime (WASI preview 1 only)",
		},
		{
			name: "memory.grow fails at the instance's limit", module: "oom.wasm", memory: 16 << 20,
			wantCode: 4, wantReason: runtimeapi.ReasonError, wantStdout: "memory.grow failed\n",
		},
		{
			name: "a memory minimum above the limit is a permanent memory-limit exit", module: "flood.wasm", memory: 64 << 10,
			wantCode: NotStartedExitCode, wantReason: runtimeapi.ReasonMemoryLimit, permanent: true,
			wantMessage: "memory minimum 2 pages (128 KiB) exceeds the instance limit of 1 pages (64 KiB)",
		},
		{
			name: "bytes that are not a module are a permanent invalid-module exit", module: "garbage.wasm",
			wantCode: NotStartedExitCode, wantReason: runtimeapi.ReasonInvalid, permanent: true,
			wantMessage: "invalid module: invalid magic number",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr := newOutput(), newOutput()
			var onExit []runtimeapi.Exit
			var mu sync.Mutex
			inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{
				ID: "i-" + tt.module, Artifact: testArtifact(t, tt.module),
				Args: tt.args, Env: tt.env, MemoryBytes: tt.memory,
				Stdout: stdout, Stderr: stderr,
				OnExit: func(e runtimeapi.Exit) {
					mu.Lock()
					defer mu.Unlock()
					onExit = append(onExit, e)
				},
			})
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			exit := waitExit(t, inst)
			if exit.Code != tt.wantCode || exit.Reason != tt.wantReason || exit.Permanent != tt.permanent {
				t.Errorf("exit = %+v, want code %d reason %s permanent %v", exit, tt.wantCode, tt.wantReason, tt.permanent)
			}
			if tt.wantMessage != "" && exit.Message != tt.wantMessage {
				t.Errorf("message = %q, want %q", exit.Message, tt.wantMessage)
			}
			if strings.Contains(exit.Message, "\n") {
				t.Errorf("message has several lines: %q", exit.Message)
			}
			if exit.At.IsZero() {
				t.Error("exit has no time")
			}
			mu.Lock()
			if len(onExit) != 1 || onExit[0] != exit {
				t.Errorf("OnExit got %+v, want exactly %+v", onExit, exit)
			}
			mu.Unlock()
			if tt.wantStdout != "" && stdout.String() != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", stdout.String(), tt.wantStdout)
			}
			if tt.wantStderr != "" && stderr.String() != tt.wantStderr {
				t.Errorf("stderr = %q, want %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}

func TestGoModuleRuns(t *testing.T) {
	if raceEnabled {
		t.Skip("compiling a 2.6 MB Go module takes 15 s under the race detector")
	}
	r := newTestRuntime(t, Config{})
	stdout := newOutput()
	inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{
		ID: "gohello", Artifact: testArtifact(t, "gohello.wasm"), Args: []string{"a", "b"}, Stdout: stdout,
	})
	if err != nil {
		t.Fatal(err)
	}
	if exit := waitExit(t, inst); exit.Code != 0 || exit.Reason != runtimeapi.ReasonCompleted {
		t.Errorf("exit = %+v, want Completed", exit)
	}
	if got, want := stdout.String(), "hello from go\nargs: a b\n"; got != want {
		t.Errorf("stdout = %q, want %q", got, want)
	}
}

func TestStopEndsABusyLoop(t *testing.T) {
	r := newTestRuntime(t, Config{})
	inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{ID: "loop", Artifact: testArtifact(t, "loop.wasm")})
	if err != nil {
		t.Fatal(err)
	}
	exit := stopInstance(t, inst)
	want := runtimeapi.Exit{Code: StopExitCode, Reason: runtimeapi.ReasonStopped, Message: "stopped by the worker"}
	if exit.Code != want.Code || exit.Reason != want.Reason || exit.Message != want.Message || exit.Permanent {
		t.Errorf("exit = %+v, want %+v", exit, want)
	}
	if again := stopInstance(t, inst); again != exit {
		t.Errorf("second Stop = %+v, want the same exit %+v", again, exit)
	}
	if inst.Exit() != exit {
		t.Errorf("Exit() = %+v, want %+v", inst.Exit(), exit)
	}
}

// blockingWriter holds the guest inside fd_write until released.
type blockingWriter struct {
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	return len(p), nil
}

func TestStopGivesUpWhenItsContextEnds(t *testing.T) {
	r := newTestRuntime(t, Config{})
	w := &blockingWriter{entered: make(chan struct{}), release: make(chan struct{})}
	inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{ID: "stuck", Artifact: testArtifact(t, "ticker.wasm"), Stdout: w})
	if err != nil {
		t.Fatal(err)
	}
	<-w.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	exit := inst.Stop(ctx, 0)
	if exit.Reason != runtimeapi.ReasonStopped || exit.Message != "stop requested, but instance stuck had not exited yet: context canceled" {
		t.Errorf("Stop with a done context = %+v", exit)
	}
	select {
	case <-inst.Done():
		t.Fatal("instance exited while blocked in a host call")
	default:
	}
	close(w.release)
	if exit := waitExit(t, inst); exit.Reason != runtimeapi.ReasonStopped || exit.Message != "stopped by the worker" {
		t.Errorf("exit once unblocked = %+v, want Stopped by the worker", exit)
	}
}

func TestStopAfterExitReturnsTheExit(t *testing.T) {
	r := newTestRuntime(t, Config{})
	inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{ID: "fail", Artifact: testArtifact(t, "fail.wasm")})
	if err != nil {
		t.Fatal(err)
	}
	exit := waitExit(t, inst)
	if got := stopInstance(t, inst); got != exit || got.Code != 3 {
		t.Errorf("Stop after exit = %+v, want %+v", got, exit)
	}
}

func TestTickerTicksUntilStopped(t *testing.T) {
	r := newTestRuntime(t, Config{})
	stdout := newOutput()
	inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{
		ID: "ticker", Artifact: testArtifact(t, "ticker.wasm"), Stdout: stdout,
	})
	if err != nil {
		t.Fatal(err)
	}
	stdout.waitFor(t, "tick 3\n")
	if got := stdout.String(); !strings.HasPrefix(got, "tick 1\ntick 2\ntick 3\n") {
		t.Errorf("stdout = %q, want it to start with tick 1, 2, 3", got)
	}
	if exit := stopInstance(t, inst); exit.Reason != runtimeapi.ReasonStopped {
		t.Errorf("exit = %+v, want Stopped", exit)
	}
}

// panicWriter makes the guest's fd_write panic, which ends it like a trap.
type panicWriter struct{}

func (panicWriter) Write([]byte) (int, error) { panic("stdout is broken") }

func TestInstancesOfOneModuleShareNothing(t *testing.T) {
	r := newTestRuntime(t, Config{})
	ticker := testArtifact(t, "ticker.wasm")
	first := newOutput()
	a, err := r.Start(context.Background(), runtimeapi.InstanceSpec{ID: "a", Artifact: ticker, Stdout: first})
	if err != nil {
		t.Fatal(err)
	}
	first.waitFor(t, "tick 2\n")

	// The second instance has its own memory: it counts from 1.
	second := newOutput()
	b, err := r.Start(context.Background(), runtimeapi.InstanceSpec{ID: "b", Artifact: ticker, Stdout: second})
	if err != nil {
		t.Fatal(err)
	}
	second.waitFor(t, "tick 1\n")
	if got := second.String(); !strings.HasPrefix(got, "tick 1\n") {
		t.Errorf("second instance printed %q, want its own count from tick 1", got)
	}

	// A third one traps; the first keeps ticking.
	c, err := r.Start(context.Background(), runtimeapi.InstanceSpec{ID: "c", Artifact: ticker, Stdout: panicWriter{}})
	if err != nil {
		t.Fatal(err)
	}
	if exit := waitExit(t, c); exit.Reason != runtimeapi.ReasonTrap || exit.Message != "stdout is broken (recovered by wazero) (at wasi_snapshot_preview1.fd_write(i32,i32,i32,i32) i32)" {
		t.Errorf("trapping instance exit = %+v, want a trap naming the panic", exit)
	}
	if exit := stopInstance(t, b); exit.Reason != runtimeapi.ReasonStopped {
		t.Errorf("second instance exit = %+v, want Stopped", exit)
	}
	before := strings.Count(first.String(), "\n")
	first.waitFor(t, "tick "+strconv.Itoa(before+1)+"\n")
	if exit := stopInstance(t, a); exit.Reason != runtimeapi.ReasonStopped {
		t.Errorf("first instance exit = %+v, want Stopped", exit)
	}
}

func TestCompiledModuleIsReused(t *testing.T) {
	r := newTestRuntime(t, Config{})
	hello := testArtifact(t, "hello.wasm")

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := r.Prepare(context.Background(), hello, 0); err != nil {
				t.Errorf("Prepare: %v", err)
			}
		})
	}
	wg.Wait()
	for i := range 3 {
		inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{ID: "hello-" + strconv.Itoa(i), Artifact: hello})
		if err != nil {
			t.Fatal(err)
		}
		if exit := waitExit(t, inst); exit.Code != 0 {
			t.Fatalf("exit = %+v", exit)
		}
	}
	if got := r.compiles.Load(); got != 1 {
		t.Errorf("compiled %d times for 8 Prepares and 3 Starts, want once", got)
	}

	if err := r.Prepare(context.Background(), hello, 16<<20); err != nil {
		t.Fatal(err)
	}
	if got := r.compiles.Load(); got != 2 {
		t.Errorf("compiles = %d, want a second compile for another memory limit", got)
	}

	r.Release(hello)
	if err := r.Prepare(context.Background(), hello, 0); err != nil {
		t.Fatal(err)
	}
	if got := r.compiles.Load(); got != 3 {
		t.Errorf("compiles = %d, want a compile again after Release", got)
	}
}

func TestCompiledCodeIsKeptInTheCacheDir(t *testing.T) {
	dir := t.TempDir()
	r := newTestRuntime(t, Config{CacheDir: dir})
	if err := r.Prepare(context.Background(), testArtifact(t, "hello.wasm"), 0); err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "wazero-*", "*"))
	if err != nil || len(files) == 0 {
		t.Errorf("no compiled code in %s (%v)", dir, err)
	}
}

func TestReleaseKeepsRunningInstancesRunning(t *testing.T) {
	r := newTestRuntime(t, Config{})
	ticker := testArtifact(t, "ticker.wasm")
	stdout := newOutput()
	inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{ID: "t", Artifact: ticker, Stdout: stdout})
	if err != nil {
		t.Fatal(err)
	}
	stdout.waitFor(t, "tick 1\n")
	r.Release(ticker)
	stdout.waitFor(t, "tick 2\n")
	if exit := stopInstance(t, inst); exit.Reason != runtimeapi.ReasonStopped {
		t.Errorf("exit = %+v, want Stopped", exit)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.modules) != 0 {
		t.Errorf("%d modules kept after Release", len(r.modules))
	}
}

func TestStartErrors(t *testing.T) {
	r := newTestRuntime(t, Config{})
	hello := testArtifact(t, "hello.wasm")
	tests := []struct {
		name        string
		spec        runtimeapi.InstanceSpec
		permanent   bool
		wantMessage string
	}{
		{
			name:        "a missing module file",
			spec:        runtimeapi.InstanceSpec{ID: "x", Artifact: runtimeapi.Artifact{Digest: "sha256:00", Path: "../testdata/nope.wasm"}},
			wantMessage: "read module sha256:00: open ../testdata/nope.wasm: no such file or directory",
		},
		{
			name: "an instance without an ID", spec: runtimeapi.InstanceSpec{Artifact: hello},
			permanent: true, wantMessage: "instance spec has no ID",
		},
		{
			name: "an environment entry without '='", spec: runtimeapi.InstanceSpec{ID: "x", Artifact: hello, Env: []string{"NOVALUE"}},
			permanent: true, wantMessage: `environment entry "NOVALUE" is not KEY=VALUE`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			called := false
			tt.spec.OnExit = func(runtimeapi.Exit) { called = true }
			inst, err := r.Start(context.Background(), tt.spec)
			var serr *runtimeapi.StartError
			if !errors.As(err, &serr) {
				t.Fatalf("Start = %v, %v; want a *StartError", inst, err)
			}
			if serr.Exit.Reason != runtimeapi.ReasonStartError || serr.Exit.Permanent != tt.permanent || serr.Exit.Message != tt.wantMessage {
				t.Errorf("exit = %+v, want StartError permanent=%v %q", serr.Exit, tt.permanent, tt.wantMessage)
			}
			if called {
				t.Error("OnExit was called for an instance that never started")
			}
		})
	}
}

func TestPrepareReportsWhyAModuleCannotRun(t *testing.T) {
	r := newTestRuntime(t, Config{})
	if err := r.Prepare(context.Background(), testArtifact(t, "hello.wasm"), 0); err != nil {
		t.Errorf("Prepare(hello) = %v", err)
	}
	for module, reason := range map[string]string{
		"badimport.wasm": runtimeapi.ReasonImportError,
		"garbage.wasm":   runtimeapi.ReasonInvalid,
		"truncated.wasm": runtimeapi.ReasonInvalid,
	} {
		err := r.Prepare(context.Background(), testArtifact(t, module), 0)
		var serr *runtimeapi.StartError
		if !errors.As(err, &serr) || serr.Exit.Reason != reason || !serr.Exit.Permanent {
			t.Errorf("Prepare(%s) = %v, want a permanent %s", module, err, reason)
		}
	}
}

func TestCloseStopsEveryInstance(t *testing.T) {
	r, err := New(context.Background(), Config{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var insts []runtimeapi.Instance
	for _, module := range []string{"loop.wasm", "ticker.wasm", "loop.wasm"} {
		inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{ID: module, Artifact: testArtifact(t, module)})
		if err != nil {
			t.Fatal(err)
		}
		insts = append(insts, inst)
	}
	ctx, cancel := context.WithTimeout(context.Background(), safetyTimeout)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, inst := range insts {
		select {
		case <-inst.Done():
		default:
			t.Fatalf("instance %s still running after Close", inst.ID())
		}
		if exit := inst.Exit(); exit.Reason != runtimeapi.ReasonStopped || exit.Message != "stopped: the wasm runtime closed" {
			t.Errorf("exit = %+v, want Stopped because the runtime closed", exit)
		}
	}
	if err := r.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	_, err = r.Start(context.Background(), runtimeapi.InstanceSpec{ID: "late", Artifact: testArtifact(t, "hello.wasm")})
	var serr *runtimeapi.StartError
	if !errors.As(err, &serr) || serr.Exit.Message != "the wasm runtime is closed" {
		t.Errorf("Start after Close = %v, want a StartError", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string
	}{
		{name: "defaults are valid", mutate: func(*Config) {}},
		{name: "memory below one page", mutate: func(c *Config) { c.DefaultMemoryBytes = 1000 },
			wantErr: "wasm runtime config: defaultMemoryBytes 1000 is outside [64 KiB, 4 GiB]"},
		{name: "no compilation workers", mutate: func(c *Config) { c.CompilationWorkers = -1 },
			wantErr: "wasm runtime config: compilationWorkers -1 must be at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if got := errString(err); got != tt.wantErr {
				t.Errorf("Validate() = %q, want %q", got, tt.wantErr)
			}
		})
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// A compile cache that cannot be written (a full disk) is the worker's
// problem, not the module's: the failure says what it is, is not kept,
// and the next Prepare succeeds once there is room again.
func TestAFullCompileCacheIsATransientFailure(t *testing.T) {
	dir := disktest.Tmpfs(t, 8<<20)
	r := newTestRuntime(t, Config{CacheDir: dir})
	hello := testArtifact(t, "hello.wasm")
	disktest.Fill(t, dir, 0)

	err := r.Prepare(context.Background(), hello, 0)
	var serr *runtimeapi.StartError
	if !errors.As(err, &serr) {
		t.Fatalf("Prepare on a full compile cache = %v, want a StartError", err)
	}
	if serr.Exit.Permanent || serr.Exit.Reason != runtimeapi.ReasonStartError || !strings.Contains(serr.Exit.Message, "no space left on device") {
		t.Fatalf("Prepare on a full compile cache = %+v, want a transient StartError saying no space is left", serr.Exit)
	}

	disktest.Unfill(t, dir)
	if err := r.Prepare(context.Background(), hello, 0); err != nil {
		t.Fatalf("Prepare once there is room again = %v, want success", err)
	}
	inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{ID: "hello-after-full-disk", Artifact: hello})
	if err != nil {
		t.Fatal(err)
	}
	if exit := waitExit(t, inst); exit.Code != 0 {
		t.Fatalf("exit = %+v, want 0", exit)
	}
}

// TestEngineIsTheInterpreterWhereThereIsNoCompiler: wazero has a compiler
// for amd64 and arm64 only; elsewhere (armv7, riscv64) the interpreter
// runs modules, and Interpreter forces it anywhere.
func TestEngineIsTheInterpreterWhereThereIsNoCompiler(t *testing.T) {
	for _, interpreter := range []bool{false, true} {
		cfg := DefaultConfig()
		cfg.Interpreter = interpreter
		rt, err := New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		want := EngineInterpreter
		if !interpreter && (runtime.GOARCH == "amd64" || runtime.GOARCH == "arm64") {
			want = EngineCompiler
		}
		if got := rt.Engine(); got != want {
			t.Errorf("Engine() on %s with Interpreter %v = %q, want %q", runtime.GOARCH, interpreter, got, want)
		}
		if err := rt.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}
