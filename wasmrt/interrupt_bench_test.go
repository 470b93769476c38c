package wasmrt

import (
	"context"
	"net/http/httptest"
	"runtime"
	"runtime/metrics"
	"slices"
	"testing"
	"time"

	"github.com/tetratelabs/wazero/experimental"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// BenchmarkGCWithBusyFunctions measures what guests in a busy loop cost the
// rest of the process: GOMAXPROCS+1 calls of loop.wasm (a loop that calls no
// import) run while the benchmark calls runtime.GC() b.N times (at least
// 30) per case, in one run and interleaved in blocks of 10: with no busy
// guest ("idle"), with guests leaving machine code for Go at every loop
// back-edge as wazero does upstream ("every-back-edge", interval 1), and at
// this runtime's interval ("interval", experimental.DefaultInterruptCheckInterval).
// It reports, for each, the p50 and the longest of runtime.GC() and of the
// time the collector's stop-the-world took to stop every goroutine (Go's
// /sched/pauses/stopping/gc:seconds: the wait for the busy guests to reach
// a point where they can be stopped; the longest as the upper bound of its
// histogram bucket).
func BenchmarkGCWithBusyFunctions(b *testing.B) {
	r := newTestRuntime(b, Config{})
	fn, err := r.PrepareFunction(context.Background(), testArtifact(b, "loop.wasm"), runtimeapi.FunctionSpec{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(fn.Close)
	busy := runtime.GOMAXPROCS(0) + 1
	startBusy := func(interval uint64) (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		callCtx := experimental.WithInterruptCheckInterval(ctx, interval)
		before := guestProcs.running.Load()
		ended := make(chan struct{}, busy)
		for range busy {
			go func() {
				fn.Serve(callCtx, httptest.NewRecorder(), &runtimeapi.FunctionRequest{
					HTTP: httptest.NewRequest("GET", "/fn", nil), ScriptName: "/fn", RemoteAddr: "192.0.2.7:5555",
				})
				ended <- struct{}{}
			}()
		}
		for guestProcs.running.Load() < before+int64(busy) {
			time.Sleep(time.Millisecond)
		}
		return func() {
			cancel()
			for range busy {
				<-ended
			}
		}
	}
	type gcCase struct {
		name     string
		interval uint64 // 0: no busy guest
		gc       []time.Duration
		stopping []float64 // seconds, bucket upper bounds
	}
	cases := []*gcCase{
		{name: "idle"},
		{name: "every-back-edge", interval: 1},
		{name: "interval", interval: experimental.DefaultInterruptCheckInterval},
	}
	sample := []metrics.Sample{{Name: "/sched/pauses/stopping/gc:seconds"}}
	stoppingSince := func(prev *metrics.Float64Histogram) []float64 {
		metrics.Read(sample)
		h := sample[0].Value.Float64Histogram()
		var out []float64
		for i, n := range h.Counts {
			if prev != nil {
				n -= prev.Counts[i]
			}
			for range n {
				out = append(out, h.Buckets[i+1])
			}
		}
		return out
	}
	readHist := func() *metrics.Float64Histogram {
		metrics.Read(sample)
		h := sample[0].Value.Float64Histogram()
		return &metrics.Float64Histogram{Counts: slices.Clone(h.Counts), Buckets: h.Buckets}
	}
	const block = 10
	n := max(b.N, 30)
	b.ResetTimer()
	for done := 0; done < n; done += block {
		for _, c := range cases {
			stop := func() {}
			if c.interval != 0 {
				stop = startBusy(c.interval)
			}
			for range min(block, n-done) {
				prev := readHist()
				t0 := time.Now()
				runtime.GC()
				c.gc = append(c.gc, time.Since(t0))
				c.stopping = append(c.stopping, stoppingSince(prev)...)
			}
			stop()
		}
	}
	b.StopTimer()
	for _, c := range cases {
		slices.Sort(c.gc)
		slices.Sort(c.stopping)
		b.ReportMetric(float64(c.gc[len(c.gc)/2])/1e3, "p50-gc-µs-"+c.name)
		b.ReportMetric(float64(c.gc[len(c.gc)-1])/1e3, "max-gc-µs-"+c.name)
		if len(c.stopping) > 0 {
			b.ReportMetric(c.stopping[len(c.stopping)/2]*1e6, "p50-stopping-µs-"+c.name)
			b.ReportMetric(c.stopping[len(c.stopping)-1]*1e6, "max-stopping-µs-"+c.name)
		}
	}
}
