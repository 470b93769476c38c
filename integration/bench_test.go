package integration

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// tickerMemory is the ticker's memory limit in the benchmarks: it uses
// one 64 KiB page, and each instance reserves its limit on the node, so a
// small limit is what lets thousands of them fit (the default 128 MiB
// lets fewer than two hundred).
const tickerMemory = 1 << 20

// BenchmarkDeployToRunning measures, all-in-one, the time from ApplyWorkload
// of a new workload (module already uploaded) to its one instance Running —
// the control plane, scheduler, session, worker and wazero in the path.
// Target (TARGETS.md): p50 ≤ 20 ms.
func BenchmarkDeployToRunning(b *testing.B) {
	a := start(b, options{})
	a.deploy(b, "warm", "ticker.wasm", &v1.WorkloadSpec{Replicas: 1, MemoryBytes: tickerMemory}) // uploads the module, warms the caches
	a.waitInstances(b, "warm", 1, state(running))
	digest := a.instances(b, "warm")[0].GetInstance().GetSpec().GetModuleDigest()
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("d%d", i)
		t0 := time.Now()
		if _, err := a.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: name, Spec: &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 1, MemoryBytes: tickerMemory}}); err != nil {
			b.Fatal(err)
		}
		for {
			v, err := a.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: name})
			if err != nil {
				b.Fatal(err)
			}
			if v.GetReady() == 1 {
				break
			}
			time.Sleep(200 * time.Microsecond)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	reportPercentiles(b, lat)
}

// BenchmarkStart500Instances measures the time from ApplyWorkload of a
// 500-replica workload of the ticker module to all 500 Running.
// Target (TARGETS.md): ≤ 1 s.
func BenchmarkStart500Instances(b *testing.B) {
	a := start(b, options{})
	a.deploy(b, "warm", "ticker.wasm", &v1.WorkloadSpec{Replicas: 1, MemoryBytes: tickerMemory})
	a.waitInstances(b, "warm", 1, state(running))
	digest := a.instances(b, "warm")[0].GetInstance().GetSpec().GetModuleDigest()
	ctx := context.Background()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		name := fmt.Sprintf("many%d", i)
		t0 := time.Now()
		if _, err := a.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: name, Spec: &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 500, MemoryBytes: tickerMemory}}); err != nil {
			b.Fatal(err)
		}
		waitReady(b, a, name, 500, 60*time.Second)
		b.ReportMetric(time.Since(t0).Seconds()*1000, "ms-to-500-running")
		b.StopTimer()
		if _, err := a.control.DeleteWorkload(ctx, &v1.DeleteWorkloadRequest{Name: name}); err != nil {
			b.Fatal(err)
		}
		a.waitInstances(b, name, 0, nil)
		b.StartTimer()
	}
}

// BenchmarkDensity runs N ticker instances (default 10,000; set
// WASMORCH_DENSITY) on one worker, all-in-one, and reports the process RSS
// and Go heap per running instance beyond an idle baseline measured in the
// same run, plus how long `get instances` takes with all of them. The
// ticker logs a line every 100 ms; WASMORCH_DENSITY_MODULE=sleep.wasm runs
// idle instances instead (one line, then asleep). It also reports the
// process's open file descriptors per instance (its log files among them),
// its page tables per instance (VmPTE, which VmRSS does not count), the
// Go heap's free memory not yet returned to the OS per instance (garbage
// of the start that RSS still holds) and its threads. Memory is read from
// /proc/self/status (VmRSS) and runtime.ReadMemStats, never after a forced
// GC. WASMORCH_DENSITY_WINDOW=5m reads it again that long after all were
// Running (the -late metrics), to see what the GC and its scavenger
// return while the node runs on. WASMORCH_DENSITY_REPLACE=1 replaces
// every instance once (scaled to zero and back) before reading, as a node
// that runs for long sees deploys and restarts.
// Target (TARGETS.md): ≤ 64 KiB per idle instance, ≤ 96 KiB for one that
// logs continuously; the figure reported includes the module's linear
// memory (one 64 KiB page, of which only what it touches is resident) and
// the control plane's share (etcd holds every instance and status record).
func BenchmarkDensity(b *testing.B) {
	n := 10000
	if s := os.Getenv("WASMORCH_DENSITY"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	module := "ticker.wasm"
	if m := os.Getenv("WASMORCH_DENSITY_MODULE"); m != "" {
		module = m
	}
	a := start(b, options{})
	a.deploy(b, "warm", module, &v1.WorkloadSpec{Replicas: 1, MemoryBytes: tickerMemory})
	a.waitInstances(b, "warm", 1, state(running))
	digest := a.instances(b, "warm")[0].GetInstance().GetSpec().GetModuleDigest()
	ctx := context.Background()
	baseRSS, baseHeap := settle()
	baseStack, baseG := stackInuse(), runtime.NumGoroutine()
	basePTE, baseFree := statusKiB("VmPTE")<<10, heapFree()
	peaks := samplePeaks()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := a.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "dense", Spec: &v1.WorkloadSpec{ModuleDigest: digest, Replicas: int32(n), MemoryBytes: tickerMemory}}); err != nil {
			b.Fatal(err)
		}
		waitReady(b, a, "dense", n, 5*time.Minute)
		b.ReportMetric(time.Since(t0).Seconds(), "s-to-all-running")
		if os.Getenv("WASMORCH_DENSITY_REPLACE") != "" {
			// Every instance replaced once, as deploys and restarts do
			// on a node that runs for long: the new ones take memory
			// the old ones had.
			if _, err := a.control.ScaleWorkload(ctx, &v1.ScaleRequest{Name: "dense", Replicas: 0}); err != nil {
				b.Fatal(err)
			}
			a.waitInstances(b, "dense", 0, nil)
			if _, err := a.control.ScaleWorkload(ctx, &v1.ScaleRequest{Name: "dense", Replicas: int32(n)}); err != nil {
				b.Fatal(err)
			}
			waitReady(b, a, "dense", n, 5*time.Minute)
		}
	}
	settled := time.Now()
	b.StopTimer()
	peakProcs, peakThreads := peaks()
	b.ReportMetric(float64(peakProcs), "peak-GOMAXPROCS")
	b.ReportMetric(float64(peakThreads), "peak-threads")
	rss, heap := settle()
	fds := openFiles()
	stack, goroutines := stackInuse(), runtime.NumGoroutine()
	pte, threads := statusKiB("VmPTE")<<10, statusKiB("Threads")
	free := heapFree()
	t0 := time.Now()
	if all := a.allInstances(b); len(all) < n {
		b.Fatalf("list instances: %d, want %d", len(all), n)
	}
	b.ReportMetric(time.Since(t0).Seconds()*1000, "ms-list-instances")
	b.ReportMetric(float64(n), "instances")
	b.ReportMetric(float64(rss-baseRSS)/float64(n)/1024, "KiB-RSS/instance")
	b.ReportMetric(float64(heap-baseHeap)/float64(n)/1024, "KiB-heap/instance")
	b.ReportMetric(float64(fds)/float64(n), "fds/instance")
	b.ReportMetric(float64(stack-baseStack)/float64(n)/1024, "KiB-stacks/instance")
	b.ReportMetric(float64(goroutines-baseG)/float64(n), "goroutines/instance")
	b.ReportMetric(float64(pte-basePTE)/float64(n)/1024, "KiB-PTE/instance")
	b.ReportMetric(float64(free-baseFree)/float64(n)/1024, "KiB-heap-free/instance")
	b.ReportMetric(float64(threads), "threads")
	if s := os.Getenv("WASMORCH_DENSITY_WINDOW"); s != "" {
		// The same reading again, later: what the GC and its scavenger
		// return of the start's garbage while the node runs on.
		window, err := time.ParseDuration(s)
		if err != nil {
			b.Fatalf("WASMORCH_DENSITY_WINDOW: %v", err)
		}
		time.Sleep(time.Until(settled.Add(window - 10*time.Second)))
		late, lateHeap := settle()
		b.ReportMetric(window.Seconds(), "s-window")
		b.ReportMetric(float64(late-baseRSS)/float64(n)/1024, "KiB-RSS-late/instance")
		b.ReportMetric(float64(lateHeap-baseHeap)/float64(n)/1024, "KiB-heap-late/instance")
		b.ReportMetric(float64(heapFree()-baseFree)/float64(n)/1024, "KiB-heap-free-late/instance")
	}
	if path := os.Getenv("WASMORCH_DENSITY_HEAP_PROFILE"); path != "" {
		writeProfiles(b, path)
	}
}

// writeProfiles writes the heap, goroutine and thread-creation profiles
// to path, path.goroutines and path.threads. The heap profile needs a
// collection to be current, so this comes after every memory reading.
func writeProfiles(b *testing.B, path string) {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
	_ = f.Close()
	if f, err = os.Create(path + ".goroutines"); err != nil {
		b.Fatal(err)
	}
	_ = pprof.Lookup("goroutine").WriteTo(f, 1)
	_ = f.Close()
	if f, err = os.Create(path + ".threads"); err != nil {
		b.Fatal(err)
	}
	_ = pprof.Lookup("threadcreate").WriteTo(f, 1)
	_ = f.Close()
}

// statusKiB reads a field of /proc/self/status that counts KiB (or,
// for Threads, things).
func statusKiB(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field+":" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// heapFree is the Go heap's memory that holds no object and that the
// runtime has not returned to the OS (read; no collection): garbage of
// the past that RSS still counts.
func heapFree() int64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapIdle - ms.HeapReleased)
}

// samplePeaks samples GOMAXPROCS and the process's threads every 20 ms
// until the function it returns is called, which returns their peaks.
func samplePeaks() func() (procs, threads int64) {
	stop, done := make(chan struct{}), make(chan struct{})
	var procs, threads int64
	go func() {
		defer close(done)
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			procs, threads = max(procs, int64(runtime.GOMAXPROCS(0))), max(threads, statusKiB("Threads"))
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() (int64, int64) {
		close(stop)
		<-done
		return procs, threads
	}
}

// stackInuse is the memory of the goroutines' stacks (read; no
// collection).
func stackInuse() int64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.StackInuse)
}

// openFiles counts this process's open file descriptors.
func openFiles() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(ents)
}

func waitReady(b *testing.B, a *allInOne, name string, n int, limit time.Duration) {
	b.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		v, err := a.control.GetWorkload(context.Background(), &v1.GetWorkloadRequest{Name: name})
		if err != nil {
			b.Fatal(err)
		}
		if int(v.GetReady()) >= n {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Fatalf("%s: fewer than %d ready after %s", name, n, limit)
}

// settle reads RSS and the Go heap in use as an operator would see them in
// steady state: it never forces a GC or returns memory to the OS, but
// waits 5 s, then samples every 500 ms for 5 s and takes the median of
// each (the GC's sawtooth makes any single reading high or low).
func settle() (rss, heap int64) {
	time.Sleep(5 * time.Second)
	var rs, hs []int64
	for range 10 {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms) // reads; does not collect
		rs, hs = append(rs, residentBytes()), append(hs, int64(ms.HeapInuse))
		time.Sleep(500 * time.Millisecond)
	}
	return median(rs), median(hs)
}

func residentBytes() int64 { return statusKiB("VmRSS") << 10 }

func reportPercentiles(b *testing.B, lat []time.Duration) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
