package worker

import (
	"os"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultGCPercent is the Go GC target a worker sets while it allocates
// fast (it serves function requests). Every function request allocates a
// fresh sandbox whose linear memory (128 KiB for a small C module) lives
// on the Go heap for the request's few microseconds; with the default of
// 100 and the small live heap of a worker, the GC runs every few dozen
// requests and the runtime keeps returning and faulting in the same pages
// (madvise and page clearing were a third of a request's CPU). At 400 a
// small C function's call costs about half (BENCHMARKS.md); the soft
// memory limit (GCMemoryLimit) keeps the larger heap goal from growing
// past what the node can spare: near the limit the GC runs as often as it
// must.
const DefaultGCPercent = 400

// IdleGCPercent is the Go GC target of a worker that allocates slowly (no
// function traffic). At 400 the heap goal is never below 16 MiB (the
// runtime's 4 MiB floor scaled by the target), so the garbage of an idle
// agent's heartbeats, a few KiB a second, piled up for a quarter of an
// hour before the first collection: an idle slim agent grew from 18 to
// over 30 MiB resident. At Go's default of 100 the goal is 4 MiB at
// least, about three times what an idle agent keeps live (1.3 MiB), and
// the pages its garbage reaches before each collection stay resident (the
// scavenger keeps 10 % beyond the goal): the idle slim agent held 20.3 to
// 20.8 MiB after 5 to 10 minutes. At 50 the goal is 2 MiB at least, the
// idle agent is collected about once a minute (2 ms of CPU each) and it
// holds about 0.7 MiB less (BENCHMARKS.md, "Edge").
const IdleGCPercent = 50

// The GC cycles' spacing that switches the target: cycles less than
// gcBusyGap apart (scaled by the idle target over 100: the heap goal above
// what is live is proportional to the target, and so is the time the
// worker takes to allocate it), one after the other for gcBusyGap at
// least, mean the worker allocates fast (a few MiB a second, sustained:
// a burst of a few cycles, as the worker's own start makes, is not); one
// cycle more than gcIdleGap after the previous (the runtime forces a
// cycle every 2 minutes) means it no longer does. Otherwise the target
// stays.
const (
	gcBusyGap = 2 * time.Second
	gcIdleGap = 30 * time.Second
)

// processGC is the process's one GC tuner: the first worker's settings
// hold (`wasmorch up` and tests run several workers in one process).
var (
	processGC    sync.Once
	processTuner atomic.Pointer[gcTuner]
)

// tuneGC applies the config's GC settings unless the environment chose:
// IdleGCPercent until the GC cycles show fast allocation, then
// cfg.GCPercent, and back once they no longer do.
func tuneGC(cfg Config) {
	if cfg.GCMemoryLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cfg.GCMemoryLimit)
	}
	if cfg.GCPercent <= 0 || os.Getenv("GOGC") != "" {
		return
	}
	processGC.Do(func() {
		t := newGCTuner(cfg.GCPercent, min(IdleGCPercent, cfg.GCPercent), time.Now)
		debug.SetGCPercent(t.current)
		processTuner.Store(t)
		t.watch()
	})
}

// gcTuner switches the GC target between busy and idle from the spacing
// of GC cycles, which it learns through a cleanup that each cycle runs.
type gcTuner struct {
	busy, idle int
	busyGap    time.Duration // gcBusyGap at the idle target
	current    int
	now        func() time.Time
	last       time.Time // the previous cycle; zero before the first
	fastSince  time.Time // the first cycle of the current run of close ones; zero outside one
	stopped    atomic.Bool
	onCycle    func(pct int) // tests: after each cycle, with the target
}

func newGCTuner(busy, idle int, now func() time.Time) *gcTuner {
	return &gcTuner{busy: busy, idle: idle, busyGap: gcBusyGap * time.Duration(idle) / 100, current: idle, now: now}
}

// cycle records a GC cycle at now and returns the target it calls for,
// and whether that is a change. The first cycle the tuner sees only
// starts the count (the time since the tuner began is no spacing of
// cycles).
func (t *gcTuner) cycle(now time.Time) (pct int, changed bool) {
	if t.last.IsZero() {
		t.last = now
		return t.current, false
	}
	gap := now.Sub(t.last)
	next := t.current
	switch {
	case gap < t.busyGap:
		if t.fastSince.IsZero() {
			t.fastSince = t.last
		}
		if now.Sub(t.fastSince) >= t.busyGap {
			next = t.busy
		}
	case gap > gcIdleGap:
		t.fastSince = time.Time{}
		next = t.idle
	default:
		t.fastSince = time.Time{}
	}
	t.last = now
	changed, t.current = next != t.current, next
	return next, changed
}

// gcSentinel is an object no one keeps: the GC frees it in the cycle after
// it is made, which runs its cleanup. It holds a pointer so that it is not
// batched into a tiny allocation (whose cleanups may never run).
type gcSentinel struct{ _ *int }

// watch arranges for the next GC cycle to call cycle (on the runtime's
// cleanup goroutine), which sets the target and watches again, until
// stop.
func (t *gcTuner) watch() {
	runtime.AddCleanup(new(gcSentinel), func(t *gcTuner) {
		if t.stopped.Load() {
			return
		}
		pct, changed := t.cycle(t.now())
		if changed {
			debug.SetGCPercent(pct)
		}
		if t.onCycle != nil {
			t.onCycle(pct)
		}
		t.watch()
	}, t)
}

func (t *gcTuner) stop() { t.stopped.Store(true) }
