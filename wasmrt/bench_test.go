package wasmrt

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/tetratelabs/wazero/sys"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// BenchmarkStartStop measures a whole instance life with a precompiled
// module: instantiate, run _start to its end, close. The "wazero" cases are
// the baseline, measured in the same run: the same compiled module and
// module configuration driven by wazero directly, on the caller's goroutine
// and without OnExit, Done or Stop support.
func BenchmarkStartStop(b *testing.B) {
	for _, module := range []string{"hello.wasm", "gohello.wasm"} {
		b.Run(module, func(b *testing.B) {
			r := newTestRuntime(b, Config{})
			a := testArtifact(b, module)
			m, err := r.acquire(context.Background(), a, 0, false, false)
			if err != nil {
				b.Fatal(err)
			}
			b.Run("wazero", func(b *testing.B) {
				ctx := context.Background()
				cfg := r.moduleConfig.WithArgs("bench").WithStdout(io.Discard)
				b.ReportAllocs()
				for b.Loop() {
					mod, err := m.wz.InstantiateModule(ctx, m.code, cfg)
					if err != nil {
						b.Fatal(err)
					}
					_, err = mod.ExportedFunction("_start").Call(ctx)
					if exitErr := (*sys.ExitError)(nil); err != nil && (!errors.As(err, &exitErr) || exitErr.ExitCode() != 0) {
						b.Fatal(err)
					}
					_ = mod.Close(ctx)
				}
			})
			b.Run("wasmrt", func(b *testing.B) {
				spec := runtimeapi.InstanceSpec{ID: "bench", Artifact: a, Stdout: io.Discard}
				b.ReportAllocs()
				for b.Loop() {
					inst, err := r.Start(context.Background(), spec)
					if err != nil {
						b.Fatal(err)
					}
					<-inst.Done()
					if exit := inst.Exit(); exit.Code != 0 {
						b.Fatalf("exit = %+v", exit)
					}
				}
			})
		})
	}
}

// BenchmarkTickerDensity starts N ticker instances (1000, or
// $WASMRT_DENSITY), waits until each has ticked, and reports
// the Go heap and the process RSS they add, per instance, and the CPU they
// use while parked between ticks. A ticker's linear memory (one 64 KiB
// page) is not on the Go heap on Linux (instmem_linux.go): only the pages
// it writes count, in the RSS. Run it once: -benchtime=1x.
func BenchmarkTickerDensity(b *testing.B) {
	n := 1000
	if s := os.Getenv("WASMRT_DENSITY"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("WASMRT_DENSITY=%q is not a positive count", s)
		}
	}
	r := newTestRuntime(b, Config{})
	a := testArtifact(b, "ticker.wasm")
	if err := r.Prepare(context.Background(), a, 0); err != nil {
		b.Fatal(err)
	}
	var lines lineCounter
	insts := make([]runtimeapi.Instance, n)
	for b.Loop() {
		heap0, rss0, goroutines0 := heapInUse(), residentBytes(b), runtime.NumGoroutine()
		lines.n.Store(0)
		began := time.Now()
		for i := range insts {
			inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{
				ID: "ticker-" + strconv.Itoa(i), Artifact: a, Stdout: &lines,
			})
			if err != nil {
				b.Fatal(err)
			}
			insts[i] = inst
		}
		started := time.Since(began)
		for lines.n.Load() < int64(n) { // each prints "tick 1" as soon as it runs
			time.Sleep(5 * time.Millisecond)
		}
		cpu0, wall0 := cpuTime(b), time.Now()
		time.Sleep(5 * time.Second) // ~50 ticks each: steady state
		cores := float64(cpuTime(b)-cpu0) / float64(time.Since(wall0))
		heap, rss, goroutines := heapInUse()-heap0, residentBytes(b)-rss0, runtime.NumGoroutine()-goroutines0

		b.ReportMetric(float64(heap)/float64(n)/1024, "KiB-heap/instance")
		b.ReportMetric(float64(rss)/float64(n)/1024, "KiB-RSS/instance")
		b.ReportMetric(float64(goroutines)/float64(n), "goroutines/instance")
		b.ReportMetric(float64(started.Microseconds())/float64(n), "µs-start/instance")
		b.ReportMetric(cores, "CPU-cores-ticking")
		b.ReportMetric(float64(n), "instances")

		var stopping sync.WaitGroup
		for _, inst := range insts {
			stopping.Go(func() { inst.Stop(context.Background(), 0) })
		}
		stopping.Wait()
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Skipf("no CPU time on this system: %v", err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// lineCounter counts the lines written to it, from any number of instances.
type lineCounter struct{ n atomic.Int64 }

func (c *lineCounter) Write(p []byte) (int, error) {
	c.n.Add(int64(bytes.Count(p, []byte{'\n'})))
	return len(p), nil
}

// heapInUse reads the Go heap in use; it does not force a collection, so
// that it reads what a running node holds.
func heapInUse() int64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapInuse)
}

// residentBytes is the process RSS, from /proc (Linux).
func residentBytes(b *testing.B) int64 {
	statm, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		b.Skipf("no RSS figure on this system: %v", err)
	}
	fields := bytes.Fields(statm)
	pages, err := strconv.ParseInt(string(fields[1]), 10, 64)
	if err != nil {
		b.Fatalf("parse /proc/self/statm %q: %v", statm, err)
	}
	return pages * int64(os.Getpagesize())
}

// BenchmarkCompileGo compiles the 2.6 MB Go module in a fresh runtime: with
// an empty cache directory (cold), and with one a previous runtime filled
// (file cache).
func BenchmarkCompileGo(b *testing.B) {
	a := testArtifact(b, "gohello.wasm")
	prepare := func(b *testing.B, dir string) {
		r, err := New(context.Background(), Config{CacheDir: dir})
		if err != nil {
			b.Fatal(err)
		}
		if err := r.Prepare(context.Background(), a, 0); err != nil {
			b.Fatal(err)
		}
		if err := r.Close(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			dir := b.TempDir()
			b.StartTimer()
			prepare(b, dir)
		}
	})
	b.Run("filecache", func(b *testing.B) {
		dir := b.TempDir()
		prepare(b, dir)
		for b.Loop() {
			prepare(b, dir)
		}
	})
}

// BenchmarkEngine compares wazero's interpreter, which runs modules where
// there is no compiler (armv7, riscv64), with its compiler, in one run:
// compiling a module (Prepare, no compile cache) and starting it to its
// exit once prepared, for a small C module and a Go-wasip1 one.
func BenchmarkEngine(b *testing.B) {
	for _, engine := range []string{EngineCompiler, EngineInterpreter} {
		for _, module := range []string{"hello.wasm", "gohello.wasm"} {
			a := testArtifact(b, module)
			b.Run(engine+"/"+module+"/prepare", func(b *testing.B) {
				for b.Loop() {
					b.StopTimer()
					r := newTestRuntime(b, Config{Interpreter: engine == EngineInterpreter})
					b.StartTimer()
					if err := r.Prepare(context.Background(), a, 0); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run(engine+"/"+module+"/run", func(b *testing.B) {
				r := newTestRuntime(b, Config{Interpreter: engine == EngineInterpreter})
				if got := r.Engine(); got != engine {
					b.Fatalf("Engine() = %q, want %q", got, engine)
				}
				if err := r.Prepare(context.Background(), a, 0); err != nil {
					b.Fatal(err)
				}
				spec := runtimeapi.InstanceSpec{ID: "bench", Artifact: a, Stdout: io.Discard}
				for b.Loop() {
					inst, err := r.Start(context.Background(), spec)
					if err != nil {
						b.Fatal(err)
					}
					<-inst.Done()
					if exit := inst.Exit(); exit.Code != 0 {
						b.Fatalf("exit = %+v", exit)
					}
				}
			})
		}
	}
}
