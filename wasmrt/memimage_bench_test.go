package wasmrt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// BenchmarkFunctionMemoryImage measures, in one run and interleaved in
// blocks of 20 calls (the shared machine's load drifts; a block lets each
// case find its caches and pools warm), one function request without HTTP
// (Serve: a fresh instance, the CGI environment, the response parsed):
// the Go (GOOS=wasip1) function gofn.wasm with its memory image and
// without it (each instance applying the module's ~32,000 data segments),
// the C function greet.wasm as it runs (pooled memory) and with an image
// (which small modules do not get: "c-image" shows why), and a native Go
// handler doing what gofn does on the same recorder. It reports each p50
// (and the Go cases' p90) and the Go function's ratios to the others ("x-c", "x-native",
// "x-without-image": how much faster the image makes it). b.N requests of
// each; at least 200.
func BenchmarkFunctionMemoryImage(b *testing.B) {
	r := newTestRuntime(b, Config{})
	ctx := context.Background()
	prepare := func(r *Runtime, module string, imaged bool) runtimeapi.Function {
		fn, err := r.prepareFunction(ctx, testArtifact(b, module), runtimeapi.FunctionSpec{Env: []string{"GREETING=hi"}}, imaged)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(fn.Close)
		return fn
	}
	goImage, goPlain, c := prepare(r, "gofn.wasm", true), prepare(r, "gofn.wasm", false), prepare(r, "greet.wasm", true)
	small := newTestRuntime(b, Config{})
	small.imageAbove = 0
	cImage := prepare(small, "greet.wasm", true)
	if goImage.(*function).m.image == nil || cImage.(*function).m.image == nil {
		b.Fatal("no memory image on this system")
	}
	if c.(*function).m.image != nil {
		b.Fatal("greet.wasm (128 KiB) has an image: it should take pooled memories")
	}
	req := httptest.NewRequest("GET", "http://fn.example/greet?who=bench", nil)
	serve := func(fn runtimeapi.Function) func() {
		return func() {
			rec := httptest.NewRecorder()
			res := fn.Serve(ctx, rec, &runtimeapi.FunctionRequest{HTTP: req, ScriptName: "/greet", RemoteAddr: "127.0.0.1:1", Timeout: safetyTimeout})
			if res.Outcome != runtimeapi.OutcomeOK || rec.Code != http.StatusOK {
				b.Fatalf("%+v, status %d", res, rec.Code)
			}
		}
	}
	native := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		who := "world"
		if q := r.URL.Query(); q.Get("who") != "" {
			who = q.Get("who")
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "hello from go, %s!\n", who)
	})
	cases := []struct {
		name string
		call func()
		lat  []time.Duration
	}{
		{name: "go-image", call: serve(goImage)},
		{name: "go-without-image", call: serve(goPlain)},
		{name: "c", call: serve(c)},
		{name: "c-image", call: serve(cImage)},
		{name: "native", call: func() { native.ServeHTTP(httptest.NewRecorder(), req) }},
	}
	const block = 20 // calls of one case in a row: each finds its own state warm
	n := max(b.N, 200)
	for i := range cases {
		cases[i].call() // warm
		cases[i].lat = make([]time.Duration, 0, n)
	}
	b.ResetTimer()
	for done := 0; done < n; done += block {
		for i := range cases {
			for range min(block, n-done) {
				t0 := time.Now()
				cases[i].call()
				cases[i].lat = append(cases[i].lat, time.Since(t0))
			}
		}
	}
	b.StopTimer()
	p50 := map[string]float64{}
	for _, c := range cases {
		slices.Sort(c.lat)
		p50[c.name] = float64(c.lat[len(c.lat)/2])
		b.ReportMetric(p50[c.name]/1e3, "p50-µs-"+c.name)
		if strings.HasPrefix(c.name, "go-") {
			b.ReportMetric(float64(c.lat[len(c.lat)*9/10])/1e3, "p90-µs-"+c.name)
		}
	}
	b.ReportMetric(p50["go-image"]/p50["c"], "x-c")
	b.ReportMetric(p50["go-image"]/p50["native"], "x-native")
	b.ReportMetric(p50["go-without-image"]/p50["go-image"], "x-without-image")
}

// timedAllocator times the Free of each memory it allocates: the reset of
// a memory image's mapping.
type timedAllocator struct {
	experimental.MemoryAllocator
	frees *[]time.Duration
}

func (a timedAllocator) Allocate(capacity, maxBytes uint64) experimental.LinearMemory {
	return timedMemory{a.MemoryAllocator.Allocate(capacity, maxBytes), a.frees}
}

type timedMemory struct {
	experimental.LinearMemory
	frees *[]time.Duration
}

func (m timedMemory) Free() {
	t0 := time.Now()
	m.LinearMemory.Free()
	*m.frees = append(*m.frees, time.Since(t0))
}

// BenchmarkGoFunctionBreakdown splits a Go function's request (gofn.wasm,
// with its memory image) into what wazero does, measured in one run,
// interleaved, p50 of each: "instantiate" (mostly the module's table of
// ~1,900 function references, which wazero builds per instance),
// "start" (_start: the Go runtime's own start-up, main, and proc_exit,
// which frees the memory: "reset" to the image), "start" again leaving
// machine code for Go at every loop back-edge, as wazero does upstream
// ("start-interval-1", where this runtime's wazero leaves once every
// experimental.DefaultInterruptCheckInterval, 256: "start";
// third_party/wazero/PATCHES.md) and at other intervals
// ("start-interval-N"), and "start" in a runtime without
// WithCloseOnContextDone ("start-no-loop-checks"): that option, which lets
// a timeout stop a busy loop and the Go scheduler preempt it, is what puts
// the checks in the loops.
func BenchmarkGoFunctionBreakdown(b *testing.B) {
	r := newTestRuntime(b, Config{})
	ctx := context.Background()
	m, err := r.acquire(ctx, testArtifact(b, "gofn.wasm"), 0, true, true)
	if err != nil {
		b.Fatal(err)
	}
	defer r.drop(m)
	if m.image == nil {
		b.Skip("no memory image on this system")
	}
	bin, serr := readModule(testArtifact(b, "gofn.wasm"))
	if serr != nil {
		b.Fatal(serr)
	}
	plan, err := planImage(bin)
	if err != nil {
		b.Fatal(err)
	}
	unchecked := wazero.NewRuntimeWithConfig(ctx, newRuntimeConfig(r.engine).WithCompilationCache(r.cache).WithMemoryLimitPages(m.key.pages))
	defer unchecked.Close(ctx)
	if err := instantiateWASI(ctx, unchecked); err != nil {
		b.Fatal(err)
	}
	uncheckedCode, err := unchecked.CompileModule(ctx, plan.stripped)
	if err != nil {
		b.Fatal(err)
	}
	cfg := r.moduleConfig.WithArgs("function").WithStdout(io.Discard).WithEnv("QUERY_STRING", "who=bench")
	var inst, start, startUnchecked, reset []time.Duration
	allocCtx := experimental.WithMemoryAllocator(ctx, timedAllocator{m.image, &reset})
	// Other intervals, for the choice of the default: 1 is upstream's.
	intervals := []uint64{1, 64, 1024}
	startAt := make([][]time.Duration, len(intervals))
	run := func(ctx context.Context, wz wazero.Runtime, code wazero.CompiledModule, starts *[]time.Duration, instantiations *[]time.Duration) {
		t0 := time.Now()
		mod, err := wz.InstantiateModule(allocCtx, code, cfg)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		_, err = mod.ExportedFunction("_start").Call(ctx)
		if exitErr := (*sys.ExitError)(nil); err != nil && (!errors.As(err, &exitErr) || exitErr.ExitCode() != 0) {
			b.Fatal(err)
		}
		*starts = append(*starts, time.Since(t1))
		if instantiations != nil {
			*instantiations = append(*instantiations, t1.Sub(t0))
		}
		_ = mod.Close(ctx)
	}
	n := max(b.N, 200)
	b.ResetTimer()
	for range n {
		run(ctx, m.wz, m.code, &start, &inst)
		for i, iv := range intervals {
			run(experimental.WithInterruptCheckInterval(ctx, iv), m.wz, m.code, &startAt[i], nil)
		}
		run(ctx, unchecked, uncheckedCode, &startUnchecked, nil)
	}
	b.StopTimer()
	type part struct {
		name string
		lat  []time.Duration
	}
	parts := []part{{"instantiate", inst}, {"start", start}, {"start-no-loop-checks", startUnchecked}, {"reset", reset}}
	for i, iv := range intervals {
		parts = append(parts, part{fmt.Sprint("start-interval-", iv), startAt[i]})
	}
	for _, c := range parts {
		slices.Sort(c.lat)
		b.ReportMetric(float64(c.lat[len(c.lat)/2])/1e3, "p50-µs-"+c.name)
	}
}
