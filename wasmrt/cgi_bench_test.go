package wasmrt

import (
	"context"
	"fmt"
	"net/http/httptest"
	"runtime"
	"runtime/debug"
	"syscall"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// BenchmarkCGIServe is one function call without HTTP: a fresh instance
// of greet.wasm (C) with the CGI environment, run, response parsed.
func BenchmarkCGIServe(b *testing.B) { benchServe(b, "greet.wasm") }

// BenchmarkCGIServeGo is BenchmarkCGIServe for a Go (GOOS=wasip1) function.
func BenchmarkCGIServeGo(b *testing.B) { benchServe(b, "gofn.wasm") }

func benchServe(b *testing.B, module string) {
	r := newTestRuntime(b, Config{})
	fn, err := r.PrepareFunction(context.Background(), testArtifact(b, module), runtimeapi.FunctionSpec{Env: []string{"GREETING=hi"}})
	if err != nil {
		b.Fatal(err)
	}
	defer fn.Close()
	req := httptest.NewRequest("GET", "http://fn.example/greet?who=bench", nil)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		rec := httptest.NewRecorder()
		res := fn.Serve(ctx, rec, &runtimeapi.FunctionRequest{HTTP: req, ScriptName: "/greet", RemoteAddr: "127.0.0.1:1", Timeout: safetyTimeout})
		if res.Outcome != runtimeapi.OutcomeOK {
			b.Fatal(res)
		}
	}
}

// BenchmarkPrepareFunctionFromCompileCache is a function's preparation
// when its module is no longer compiled in memory but is in the compile
// cache (a cold start long after the function scaled to zero): load,
// validate, load the machine code, check the imports.
func BenchmarkPrepareFunctionFromCompileCache(b *testing.B) {
	r := newTestRuntime(b, Config{})
	a := testArtifact(b, "greet.wasm")
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		fn, err := r.PrepareFunction(ctx, a, runtimeapi.FunctionSpec{})
		if err != nil {
			b.Fatal(err)
		}
		fn.Close()
		r.Release(a)
	}
}

// BenchmarkCGIServeGCPercent is BenchmarkCGIServe under several Go GC
// targets in one run (the worker sets 400: worker.DefaultGCPercent), with
// CPU time per call beside wall time: each call's linear memory lives on
// the Go heap.
func BenchmarkCGIServeGCPercent(b *testing.B) {
	r := newTestRuntime(b, Config{})
	fn, err := r.PrepareFunction(context.Background(), testArtifact(b, "greet.wasm"), runtimeapi.FunctionSpec{Env: []string{"GREETING=hi"}})
	if err != nil {
		b.Fatal(err)
	}
	defer fn.Close()
	req := httptest.NewRequest("GET", "http://fn.example/greet?who=bench", nil)
	ctx := context.Background()
	for _, pct := range []int{100, 200, 400, 800} {
		b.Run(fmt.Sprintf("gogc=%d", pct), func(b *testing.B) {
			defer debug.SetGCPercent(debug.SetGCPercent(pct))
			runtime.GC()
			var before, after syscall.Rusage
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &before)
			b.ResetTimer()
			for range b.N {
				rec := httptest.NewRecorder()
				if res := fn.Serve(ctx, rec, &runtimeapi.FunctionRequest{HTTP: req, ScriptName: "/greet", RemoteAddr: "127.0.0.1:1", Timeout: safetyTimeout}); res.Outcome != runtimeapi.OutcomeOK {
					b.Fatal(res)
				}
			}
			b.StopTimer()
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &after)
			cpu := time.Duration(after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano())
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
		})
	}
}
