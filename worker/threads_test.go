package worker

import (
	"runtime"
	rtmetrics "runtime/metrics"
	"sync"
	"testing"
)

func threadCount() uint64 {
	s := []rtmetrics.Sample{{Name: "/sched/threads/total:threads"}}
	rtmetrics.Read(s)
	return s[0].Value.Uint64()
}

func TestIdleThreadsAreEnded(t *testing.T) {
	// Make Go start threads it then has no use for: goroutines that
	// each hold a thread (locked to it) while they wait, then let go.
	const held = 64
	release := make(chan struct{})
	var locked, done sync.WaitGroup
	locked.Add(held)
	done.Add(held)
	for range held {
		go func() {
			defer done.Done()
			runtime.LockOSThread()
			locked.Done()
			<-release // its thread waits with it; the P goes to another
			runtime.UnlockOSThread()
		}()
	}
	locked.Wait()
	close(release)
	done.Wait()
	before := threadCount()
	if before < held {
		t.Fatalf("%d threads after %d goroutines each held one", before, held)
	}

	const keep = 4
	n := retireThreads(keep)
	after := threadCount()
	t.Logf("threads: %d before, %d ended, %d after", before, n, after)
	if n == 0 || after > before-uint64(n)/2 {
		t.Errorf("threads: %d before, %d ended, %d after; want about %d fewer", before, n, after, n)
	}
	// What is left is what runs Go code, what is in system calls, and
	// keep: passes that follow have little or nothing to end. (The runtime
	// frees an ended thread's M later, at its next thread start, so the
	// count read right after a pass may still hold a few: a pass or two
	// more may end what that made it see.)
	passes := []int{n}
	for again := retireThreads(keep); again > keep; again = retireThreads(keep) {
		if passes = append(passes, again); len(passes) > 4 {
			t.Errorf("threads ended by each pass: %v; want passes after the first to end ≤ %d", passes, keep)
			break
		}
	}
}
