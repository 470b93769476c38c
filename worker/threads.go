package worker

import (
	"context"
	"runtime"
	rtmetrics "runtime/metrics"
	"sync"
	"time"
)

// Go keeps every OS thread it ever started, parked, for the life of the
// process, and a worker starts many at times: a burst of instance starts
// blocks thousands of goroutines in short system calls (log files, the
// module cache) while the node is loaded, each making Go start a thread
// for the P it handed off, and the wasm runtime raises GOMAXPROCS for
// guests that wait to run (wasmrt/procs.go). 10,000 instances started at
// once on two loaded cores left 700-1,700 threads, each holding about
// 90 KiB (its g0 and signal stacks, its M) after it had nothing left to
// do: 7-15 KiB per instance. So the worker checks every threadCheck and
// ends the threads beyond what the process uses (one per P, one per
// goroutine in a system call, sysmon and the template thread) and
// keepIdleThreads more: a goroutine that exits locked to its thread ends
// the thread (runtime.LockOSThread). Go starts threads again when it
// needs them.

// threadCheck is how often the worker looks for idle threads.
const threadCheck = 10 * time.Second

// keepIdleThreads is how many idle threads are kept for the next burst.
const keepIdleThreads = 16

// retireThreads ends the threads idle beyond keep now, and reports how
// many it ended.
func retireThreads(keep int) int {
	s := []rtmetrics.Sample{
		{Name: "/sched/threads/total:threads"},
		{Name: "/sched/gomaxprocs:threads"},
		{Name: "/sched/goroutines/not-in-go:goroutines"},
	}
	rtmetrics.Read(s)
	for _, v := range s {
		if v.Value.Kind() != rtmetrics.KindUint64 {
			return 0 // an older runtime: nothing to go by
		}
	}
	total, procs, inSyscall := s[0].Value.Uint64(), s[1].Value.Uint64(), s[2].Value.Uint64()
	busy := procs + inSyscall + 2 // sysmon and the template thread have no P
	if total <= busy+uint64(keep) {
		return 0
	}
	n := int(total - busy - uint64(keep))
	var wg sync.WaitGroup
	wg.Add(n)
	for range n {
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
			wg.Done()
		}()
	}
	wg.Wait()
	return n
}

// retireThreadsLoop runs retireThreads every threadCheck until ctx ends.
func (w *Worker) retireThreadsLoop(ctx context.Context) {
	t := time.NewTicker(threadCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n := retireThreads(keepIdleThreads); n > 0 {
				w.logger.Debug("ended idle threads", "threads", n)
			}
		}
	}
}
