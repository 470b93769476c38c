package worker

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// What instances and the node use (`wasmorch top`), measured when the
// control plane asks: CPU is counted time, so a rate needs two samples.
// The worker keeps the previous call's; when it is too old or too recent,
// or lacks an instance, it samples again after usageWindow. Nothing runs
// between calls.
const (
	usageWindow    = time.Second
	usageMaxWindow = time.Minute
	defaultMemory  = 128 << 20
)

// usageSample is counted CPU time, of the node and of each instance.
type usageSample struct {
	at        time.Time
	node      time.Duration
	instances map[string]time.Duration
}

type usageState struct {
	mu   sync.Mutex
	prev *usageSample
}

// measured is one instance's reading.
type measured struct {
	id, workload string
	limit        int64
	usage        runtimeapi.Usage
	ok           bool
}

// usage answers the Worker service's Usage call.
func (w *Worker) usage(ctx context.Context, req *pb.UsageRequest) (*pb.UsageReport, error) {
	w.usageState.mu.Lock()
	defer w.usageState.mu.Unlock()
	first, readings := w.sample(req.GetInstances())
	prev := w.usageState.prev
	fresh := prev == nil || first.at.Sub(prev.at) < usageWindow || first.at.Sub(prev.at) > usageMaxWindow
	for _, m := range readings {
		if fresh {
			break
		}
		if _, ok := prev.instances[m.id]; m.ok && !ok {
			fresh = true
		}
	}
	if fresh {
		t := time.NewTimer(usageWindow)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, errdefs.Unavailablef("usage: %v", ctx.Err())
		case <-t.C:
		}
		prev = first
		first, readings = w.sample(req.GetInstances())
	}
	w.usageState.prev = first
	window := first.at.Sub(prev.at)
	rate := func(d time.Duration) int64 { return int64(d) * 1000 / int64(window) }
	out := &pb.UsageReport{Node: w.cfg.NodeName, CpuMillis: rate(first.node - prev.node), MemoryBytes: w.nodeMemory(),
		WindowMs: window.Milliseconds(), UnixNano: first.at.UnixNano()}
	for _, m := range readings {
		u := &pb.InstanceUsage{Id: m.id, Workload: m.workload, MemoryLimitBytes: m.limit, Unmeasured: !m.ok}
		if m.ok {
			u.CpuMillis = max(0, rate(m.usage.CPU-prev.instances[m.id]))
			u.MemoryBytes = m.usage.MemoryBytes
		}
		out.Instances = append(out.Instances, u)
	}
	return out, nil
}

// sample reads the node's and the instances' counters now; ids it does
// not hold are left out.
func (w *Worker) sample(ids []string) (*usageSample, []measured) {
	s := &usageSample{at: time.Now(), node: processCPU(), instances: map[string]time.Duration{}}
	var out []measured
	w.mu.Lock()
	held := make([]*instance, 0, len(ids))
	for _, id := range ids {
		if in, ok := w.instances[id]; ok {
			held = append(held, in)
		}
	}
	all := make([]*instance, 0, len(w.instances))
	for _, in := range w.instances {
		all = append(all, in)
	}
	w.mu.Unlock()
	// Containers run outside this process: their CPU is the node's too.
	for _, in := range all {
		if u, ok := in.measure(); ok && in.rt != nil && in.rt.Name() == kindContainer {
			s.node += u.CPU
		}
	}
	for _, in := range held {
		m := measured{id: in.id(), workload: in.rec.GetWorkload(), limit: in.rec.GetSpec().GetMemoryBytes()}
		if m.limit == 0 {
			m.limit = defaultMemory
		}
		m.usage, m.ok = in.measure()
		if m.ok {
			s.instances[m.id] = m.usage.CPU
		}
		out = append(out, m)
	}
	return s, out
}

// measure reads what a running instance uses, if its runtime says.
func (in *instance) measure() (runtimeapi.Usage, bool) {
	in.mu.Lock()
	run := in.run
	in.mu.Unlock()
	m, ok := run.(runtimeapi.Measured)
	if !ok {
		return runtimeapi.Usage{}, false
	}
	return m.Usage(), true
}

// nodeMemory is the worker process's resident memory and its
// containers' memory.
func (w *Worker) nodeMemory() int64 {
	total := processRSS()
	w.mu.Lock()
	all := make([]*instance, 0, len(w.instances))
	for _, in := range w.instances {
		if in.rt != nil && in.rt.Name() == kindContainer {
			all = append(all, in)
		}
	}
	w.mu.Unlock()
	for _, in := range all {
		if u, ok := in.measure(); ok {
			total += u.MemoryBytes
		}
	}
	return total
}

// processCPU is the CPU time this process has used (user and system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// processRSS is this process's resident memory (/proc/self/statm).
func processRSS() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}
