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
		{10 * time.Second, 100, false},       // slow: stays idle
		{500 * time.Millisecond, 400, true},  // fast: busy
		{1 * time.Second, 400, false},        // still fast
		{10 * time.Second, 400, false},       // between the gaps: stays busy
		{2 * time.Minute, 100, true},         // the runtime's forced cycle: idle again
		{20 * time.Second, 100, false},       // between: stays idle
		{1999 * time.Millisecond, 400, true}, // just under the busy gap
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

	advance(time.Minute)
	if pct := gcOnce(); pct != 100 || current() != 100 {
		t.Errorf("after a slow cycle: tuner %d, runtime %d; want 100", pct, current())
	}
	advance(100 * time.Millisecond)
	if pct := gcOnce(); pct != 350 || current() != 350 {
		t.Errorf("after a fast cycle: tuner %d, runtime %d; want 350", pct, current())
	}
	advance(3 * time.Minute)
	if pct := gcOnce(); pct != 100 || current() != 100 {
		t.Errorf("after a cycle 3 minutes later: tuner %d, runtime %d; want 100", pct, current())
	}
}
