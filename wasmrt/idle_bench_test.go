package wasmrt

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// idleCost is what a node of sleeping guests cost per wake-up.
type idleCost struct {
	wakeups              int64
	bytes, allocs, cpuNs float64 // per wake-up
	procs                int     // GOMAXPROCS at the end
}

// measureIdle runs n tickers (ticker.wasm: wake every 100 ms, print a
// line, sleep again) for the window, after one window to settle, and
// reports the heap bytes the process allocated and the CPU time it used
// per wake-up.
func measureIdle(b *testing.B, n int, window time.Duration) idleCost {
	r := newTestRuntime(b, Config{})
	a := testArtifact(b, "ticker.wasm")
	out := &lineCounter{} // its lines are the wake-ups
	var insts []runtimeapi.Instance
	for i := range n {
		inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{ID: fmt.Sprint("idle", i), Artifact: a, MemoryBytes: 1 << 20, Stdout: out})
		if err != nil {
			b.Fatal(err)
		}
		insts = append(insts, inst)
	}
	defer func() {
		for _, inst := range insts {
			stopInstance(b, inst)
		}
	}()
	time.Sleep(window)
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0) // exact counts; it does not collect
	cpu0, lines0 := cpuTime(b), out.n.Load()
	time.Sleep(window)
	runtime.ReadMemStats(&ms1)
	c := idleCost{wakeups: out.n.Load() - lines0}
	c.bytes = float64(ms1.TotalAlloc-ms0.TotalAlloc) / float64(c.wakeups)
	c.allocs = float64(ms1.Mallocs-ms0.Mallocs) / float64(c.wakeups)
	c.cpuNs = float64(cpuTime(b)-cpu0) / float64(c.wakeups)
	c.procs = runtime.GOMAXPROCS(0)
	return c
}

// BenchmarkIdleGuests measures what 1,000 sleeping guests cost while
// nothing else happens ([hardening] 21 item 26): each ticker wakes every
// 100 ms, prints a line and sleeps again in poll_oneoff. The baseline,
// measured in the same run, is wazero's own poll_oneoff; the ratios are
// the runtime's figure over the baseline's.
func BenchmarkIdleGuests(b *testing.B) {
	const n, window = 1000, 3 * time.Second
	for b.Loop() {
		wazerosPollOneoff = true
		base := measureIdle(b, n, window)
		wazerosPollOneoff = false
		got := measureIdle(b, n, window)
		b.ReportMetric(got.bytes, "B/wakeup")
		b.ReportMetric(base.bytes, "baseline-B/wakeup")
		b.ReportMetric(got.bytes/base.bytes, "B-ratio")
		b.ReportMetric(got.allocs, "allocs/wakeup")
		b.ReportMetric(base.allocs, "baseline-allocs/wakeup")
		b.ReportMetric(got.cpuNs/1000, "µs-CPU/wakeup")
		b.ReportMetric(base.cpuNs/1000, "baseline-µs-CPU/wakeup")
		b.ReportMetric(got.cpuNs/base.cpuNs, "CPU-ratio")
		b.ReportMetric(float64(got.wakeups)/window.Seconds(), "wakeups/s")
		b.ReportMetric(float64(got.procs), "GOMAXPROCS")
	}
}
