package worker

import (
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"
)

func TestGCTargetFollowsTheSpacingOfCycles(t *testing.T) {
	start := time.Unix(1000, 0)
	tu := newGCTuner(400, 100, func() time.Time { return start })
	if tu.current != 100 {
		t.Fatalf("a new tuner's target is %d, not the idle 100", tu.current)
	}
	at := start
	for i, step := range []struct {
		after   time.Duration
		want    int
		changed bool
	}{
		{100 * time.Millisecond, 100, false},  // the first: no spacing yet
		{10 * time.Second, 100, false},        // slow: stays idle
		{500 * time.Millisecond, 100, false},  // fast, but a burst so far
		{500 * time.Millisecond, 100, false},  // fast for 1 s
		{1 * time.Second, 400, true},          // fast for 2 s: busy
		{1 * time.Second, 400, false},         // still fast
		{10 * time.Second, 400, false},        // between the gaps: stays busy
		{2 * time.Minute, 100, true},          // the runtime's forced cycle: idle again
		{20 * time.Second, 100, false},        // between: stays idle
		{1999 * time.Millisecond, 100, false}, // just under the busy gap: a run begins
		{5 * time.Second, 100, false},         // slow: the run ends
		{10 * time.Millisecond, 100, false},   // a burst of cycles, as a start makes
		{10 * time.Millisecond, 100, false},
		{10 * time.Millisecond, 100, false},
		{1999 * time.Millisecond, 400, true}, // close cycles for over 2 s: busy
	} {
		at = at.Add(step.after)
		pct, changed := tu.cycle(at)
		if pct != step.want || changed != step.changed {
			t.Errorf("cycle %d, %v after the previous: target %d (changed %v), want %d (changed %v)", i, step.after, pct, changed, step.want, step.changed)
		}
	}
}

// TestGCBusyGapScalesWithTheIdleTarget: at a lower idle target the heap
// goal above what is live is smaller, so cycles come sooner for the same
// allocation rate; the spacing that means "busy" is shorter in proportion.
func TestGCBusyGapScalesWithTheIdleTarget(t *testing.T) {
	at := time.Unix(1000, 0)
	tu := newGCTuner(400, 50, func() time.Time { return at })
	for i, step := range []struct {
		after   time.Duration
		want    int
		changed bool
	}{
		{time.Second, 50, false},             // the first
		{1500 * time.Millisecond, 50, false}, // under 2 s, not under 1 s: not fast
		{999 * time.Millisecond, 50, false},  // fast (under 2 s × 50/100)
		{999 * time.Millisecond, 400, true},  // fast for over 1 s: busy
		{2 * time.Minute, 50, true},          // idle again
	} {
		at = at.Add(step.after)
		pct, changed := tu.cycle(at)
		if pct != step.want || changed != step.changed {
			t.Errorf("cycle %d, %v after the previous: target %d (changed %v), want %d (changed %v)", i, step.after, pct, changed, step.want, step.changed)
		}
	}
}

// TestGCTunerSetsTheTargetOnRealCycles runs the tuner on the runtime's own
// GC cycles (forced here to have cycles at all; nothing is measured), with
// a clock the test moves, and reads the target the runtime then has.
func TestGCTunerSetsTheTargetOnRealCycles(t *testing.T) {
	if p := processTuner.Load(); p != nil {
		p.stop() // a worker of another test would set the target too
	}
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	var mu sync.Mutex
	clock := time.Unix(1000, 0)
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }

	tu := newGCTuner(350, 100, now)
	cycles := make(chan int, 16)
	tu.onCycle = func(pct int) { cycles <- pct }
	defer tu.stop()
	tu.watch()

	gcOnce := func() int {
		t.Helper()
		runtime.GC()
		select {
		case pct := <-cycles:
			return pct
		case <-time.After(time.Minute):
			t.Fatal("no cleanup ran after a GC cycle")
			return 0
		}
	}
	current := func() int { p := debug.SetGCPercent(-1); debug.SetGCPercent(p); return p }

	advance(100 * time.Millisecond)
	if pct := gcOnce(); pct != 100 || current() != 100 {
		t.Errorf("after the first cycle (no spacing yet): tuner %d, runtime %d; want 100", pct, current())
	}
	advance(time.Minute)
	if pct := gcOnce(); pct != 100 || current() != 100 {
		t.Errorf("after a slow cycle: tuner %d, runtime %d; want 100", pct, current())
	}
	advance(1500 * time.Millisecond)
	if pct := gcOnce(); pct != 100 || current() != 100 {
		t.Errorf("after one fast cycle: tuner %d, runtime %d; want 100", pct, current())
	}
	advance(1500 * time.Millisecond)
	if pct := gcOnce(); pct != 350 || current() != 350 {
		t.Errorf("after fast cycles for 3 s: tuner %d, runtime %d; want 350", pct, current())
	}
	advance(3 * time.Minute)
	if pct := gcOnce(); pct != 100 || current() != 100 {
		t.Errorf("after a cycle 3 minutes later: tuner %d, runtime %d; want 100", pct, current())
	}
}
