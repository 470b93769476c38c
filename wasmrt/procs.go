package wasmrt

import (
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// Guests and the rest of the process share Go's scheduler, which has no
// priorities: a goroutine that becomes runnable waits in a FIFO run queue
// until a P (one of GOMAXPROCS) is free, and a busy goroutine gives its P
// up only when preempted, every 10 ms. Compiled guest code is preempted
// like Go code (with WithCloseOnContextDone, wazero leaves native code for
// Go at every loop back-edge), so one busy guest costs little; but with
// twenty busy guests on two Ps, every goroutine the control plane wakes
// (a heartbeat, a session message, an etcd apply, an API call) queues
// behind the guests for about 100 ms, and a heartbeat crosses tens of
// such hand-offs: the node's lease expired although nothing was wrong
// with it.
//
// So the runtime keeps GOMAXPROCS at least the number of guests running
// Wasm code plus the Ps the process had without guests: a busy guest then
// holds a P of its own, the rest of the process always finds free Ps, and
// the kernel shares the CPUs among the threads, giving a thread that
// wakes after a wait (a heartbeat) the CPU soon rather than after every
// busy guest's slice. A guest counts as running from the start of _start
// until it returns, except while it sleeps.

// procChunk is how many Ps GOMAXPROCS grows by at a time, so that guests
// starting one by one do not stop the world each.
const procChunk = 8

// maxGuestProcs bounds the Ps added for guests: past it, busy guests share
// Ps again through Go's scheduler. Go keeps the threads it started for
// them, parked.
const maxGuestProcs = 512

// lowerAfter is how long spare Ps are kept after the guests running fell a
// chunk below them: guests that come and go do not resize at every turn.
const lowerAfter = 5 * time.Second

// guestProcs is the process's: GOMAXPROCS is one per process, and every
// Runtime's guests count.
var guestProcs procReserve

// procReserve counts the guests running Wasm code and resizes GOMAXPROCS.
type procReserve struct {
	running atomic.Int64
	// room is how many guests may run before GOMAXPROCS must grow: the
	// Ps added for guests, or more than any count once at maxGuestProcs.
	room atomic.Int64
	// lowering is set while a check for spare Ps is armed.
	lowering atomic.Bool

	mu    sync.Mutex
	base  int // GOMAXPROCS without guests; read when the first Ps are added
	added int // Ps added for guests

}

// enter counts a guest that starts (or goes on) running Wasm code.
func (p *procReserve) enter() {
	if n := p.running.Add(1); n > p.room.Load() {
		p.grow()
	}
}

// leave counts a guest that stops running Wasm code: it sleeps or ended.
func (p *procReserve) leave() {
	n := p.running.Add(-1)
	if n <= p.room.Load()-procChunk && p.lowering.CompareAndSwap(false, true) {
		time.AfterFunc(lowerAfter, p.shrink)
	}
}

// grow adds Ps for the guests running now, in whole chunks.
func (p *procReserve) grow() {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := int(p.running.Load())
	if n <= p.added {
		return // another guest grew it meanwhile
	}
	if p.added == 0 {
		p.base = runtime.GOMAXPROCS(0)
	}
	p.resize(min(roundUp(n, procChunk), maxGuestProcs))
}

// shrink gives back the Ps the guests running now do not need.
func (p *procReserve) shrink() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lowering.Store(false)
	if want := roundUp(int(p.running.Load()), procChunk); want < p.added {
		p.resize(want)
		// A guest that entered meanwhile may have compared itself with
		// the room before it shrank: room is stored before running is
		// read again, so that such a guest is counted here.
		if n := int(p.running.Load()); n > p.added {
			p.resize(min(roundUp(n, procChunk), maxGuestProcs))
		}
	}
}

// resize sets GOMAXPROCS to base plus added Ps; with none added it gives
// the process back its own setting (and Go's automatic updates of it).
func (p *procReserve) resize(added int) {
	switch {
	case added > 0:
		runtime.GOMAXPROCS(p.base + added)
	case os.Getenv("GOMAXPROCS") != "":
		runtime.GOMAXPROCS(p.base)
	default:
		runtime.SetDefaultGOMAXPROCS()
	}
	p.added = added
	room := int64(added)
	if added >= maxGuestProcs {
		room = 1 << 62 // nothing left to add until it shrinks
	}
	p.room.Store(room)
}

func roundUp(n, m int) int { return (n + m - 1) / m * m }
