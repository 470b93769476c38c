package membudget

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

const MiB = 1 << 20

// waitFor polls cond, failing after a generous deadline (a hang guard,
// not a performance assertion).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestInstancesAreRefusedBeyondTheBudget(t *testing.T) {
	b := New(256*MiB, 10)
	for i := range 2 {
		if !b.Reserve(128 * MiB) {
			t.Fatalf("128 MiB instance %d refused by a 256 MiB budget", i+1)
		}
	}
	if b.Reserve(1) {
		t.Fatal("an instance was admitted beyond the budget")
	}
	b.Unreserve(128 * MiB)
	if !b.Reserve(64*MiB) || b.Reserve(65*MiB) {
		t.Fatalf("after one left: usage %+v; want 64 MiB admitted, 65 more refused", b.Usage())
	}
	if u := b.Usage(); u.Reserved != 192*MiB || u.Free() != 64*MiB {
		t.Errorf("usage %+v, want 192 MiB reserved, 64 MiB free", u)
	}
}

// Requests borrow what no instance reserved; beyond it they wait, and are
// lent memory in the order they came as it is given back.
func TestRequestsWaitInLineForMemory(t *testing.T) {
	b := New(100*MiB, 10)
	if !b.Reserve(40 * MiB) {
		t.Fatal("reserve refused")
	}
	ctx := context.Background()
	for range 6 {
		if err := b.Borrow(ctx, 10*MiB); err != nil {
			t.Fatal(err)
		}
	}
	// Nothing free: the next ones wait, a large one first.
	lent := make(chan int64, 2)
	borrow := func(n int64) {
		if err := b.Borrow(ctx, n); err != nil {
			t.Error(err)
		}
		lent <- n
	}
	go borrow(30 * MiB)
	waitFor(t, "the first to wait", func() bool { return b.Usage().Waiting == 1 })
	go borrow(10 * MiB)
	waitFor(t, "the second to wait", func() bool { return b.Usage().Waiting == 2 })

	// 20 MiB back: enough for the second, but the first came first.
	b.Return(10 * MiB)
	b.Return(10 * MiB)
	if u := b.Usage(); u.Waiting != 2 || u.Borrowed != 40*MiB {
		t.Fatalf("after 20 MiB came back: %+v; want both still waiting (first come, first served)", u)
	}
	b.Return(10 * MiB) // 30 MiB free: the first's
	if n := <-lent; n != 30*MiB {
		t.Fatalf("lent %d MiB first, want the first request's 30", n>>20)
	}
	if u := b.Usage(); u.Waiting != 1 || u.Free() != 0 {
		t.Fatalf("after the first was lent: %+v; want the second waiting, nothing free", u)
	}
	b.Return(10 * MiB)
	if n := <-lent; n != 10*MiB {
		t.Fatalf("lent %d MiB, want the second request's 10", n>>20)
	}
	if u := b.Usage(); u.Borrowed != 60*MiB || u.Waiting != 0 || u.Free() != 0 {
		t.Errorf("usage %+v, want 60 MiB lent, none waiting", u)
	}
}

// A request waits no longer than its context, and no more requests than
// the queue's bound wait at all.
func TestWaitingIsBounded(t *testing.T) {
	b := New(10*MiB, 2)
	if err := b.Borrow(context.Background(), 10*MiB); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	why := errors.New("gave up")
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- b.Borrow(ctx, MiB) }()
	}
	waitFor(t, "two waiting", func() bool { return b.Usage().Waiting == 2 })
	var full *QueueFullError
	if err := b.Borrow(context.Background(), MiB); !errors.As(err, &full) || full.Waiting != 2 {
		t.Fatalf("a third waiter: %v, want a full queue of 2", err)
	}
	cancel(why)
	for range 2 {
		if err := <-errs; !errors.Is(err, why) {
			t.Errorf("a waiter whose context ended: %v, want its cause", err)
		}
	}
	if u := b.Usage(); u.Waiting != 0 || u.Borrowed != 10*MiB {
		t.Errorf("usage %+v, want nobody waiting and only the first request's 10 MiB lent", u)
	}
	b.Return(10 * MiB)
	if u := b.Usage(); u.Free() != 10*MiB {
		t.Errorf("usage %+v, want everything free", u)
	}
}

// An instance is admitted within the budget even when requests hold the
// memory it needs; the requests' memory comes back as they end, and no
// request borrows meanwhile.
func TestInstancesGoBeforeRequests(t *testing.T) {
	b := New(100*MiB, 10)
	if err := b.Borrow(context.Background(), 80*MiB); err != nil {
		t.Fatal(err)
	}
	if !b.Reserve(50 * MiB) {
		t.Fatal("an instance within the budget was refused because of requests")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Borrow(ctx, 10*MiB) }()
	waitFor(t, "the request to wait", func() bool { return b.Usage().Waiting == 1 })
	b.Return(80 * MiB)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if u := b.Usage(); u.Reserved != 50*MiB || u.Borrowed != 10*MiB {
		t.Errorf("usage %+v, want 50 MiB reserved and 10 MiB lent", u)
	}
}

// However many borrow at once, what is reserved and lent never passes the
// budget, and everything comes back.
func TestBorrowersNeverPassTheBudget(t *testing.T) {
	const total = 64 * MiB
	b := New(total, 1000)
	var wg sync.WaitGroup
	var mu sync.Mutex
	worst := int64(0)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := int64(1+i%7) * MiB
			for range 40 {
				if err := b.Borrow(context.Background(), n); err != nil {
					t.Error(err)
					return
				}
				u := b.Usage()
				mu.Lock()
				worst = max(worst, u.Reserved+u.Borrowed)
				mu.Unlock()
				b.Return(n)
			}
		}()
	}
	wg.Wait()
	if worst > total {
		t.Errorf("%d MiB held at once, over the budget of %d MiB", worst>>20, total>>20)
	}
	if u := b.Usage(); u.Borrowed != 0 || u.Waiting != 0 {
		t.Errorf("after every request ended: %+v", u)
	}
}

// TryBorrow lends what is free, and never passes a request waiting in
// line.
func TestTryBorrowNeverWaitsNorPasses(t *testing.T) {
	b := New(100*MiB, 10)
	if !b.TryBorrow(60 * MiB) {
		t.Fatal("60 MiB free of 100 refused")
	}
	if b.TryBorrow(50 * MiB) {
		t.Fatal("50 MiB lent with 40 free")
	}
	waiting := make(chan error, 1)
	go func() { waiting <- b.Borrow(context.Background(), 50*MiB) }()
	waitFor(t, "the 50 MiB request in line", func() bool { return b.Usage().Waiting == 1 })
	if b.TryBorrow(10 * MiB) {
		t.Fatal("10 MiB lent past a request waiting in line")
	}
	b.Return(60 * MiB)
	if err := <-waiting; err != nil {
		t.Fatal(err)
	}
	if u := b.Usage(); u.Borrowed != 50*MiB || !b.TryBorrow(50*MiB) || b.TryBorrow(1) {
		t.Fatalf("usage %+v: want the waiting request lent, then exactly the rest", u)
	}
}
