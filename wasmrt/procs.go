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
// Go once every 256 loop back-edges, third_party/wazero/PATCHES.md), so one
// busy guest costs little; but with twenty busy guests on two Ps, every
// goroutine the control plane wakes
// (a heartbeat, a session message, an etcd apply, an API call) queues
// behind the guests for about 100 ms, and a heartbeat crosses tens of
// such hand-offs: the node's lease expired although nothing was wrong
// with it.
//
// So the runtime keeps a P free for the rest of the process: when guests
// running Wasm code hold every P but one for longer than growAfter, it
// raises GOMAXPROCS to the count of those that ran all that time, plus the
// Ps the process had without guests. Only guests holding a P count, and no
// more of them can than there are Ps: those beyond wait in the run queue,
// and counting them would raise GOMAXPROCS to its cap at the first loaded
// burst of short guests (requests at once). So a check raises it to at
// most the Ps there are, rounded up to a chunk, plus the process's own;
// guests that stay busy get a P each after a few checks. A busy guest then
// holds a P of its own, the rest of the process always finds free Ps, and
// the kernel shares the CPUs among the threads, giving a thread that wakes
// after a wait (a heartbeat) the CPU soon rather than after every busy
// guest's slice. A guest counts as running from the start of _start until
// it returns, except while it sleeps. Guests that wake for microseconds (a
// ticker), even thousands starting at once, do not raise it: idle Ps make
// Go wake more threads for every timer, and Go keeps a thread for every P
// it ever ran, parked.

// growAfter is how long guests may hold all Ps but one before GOMAXPROCS
// grows; what they cost the rest of the process meanwhile is a wait of
// that order, far below a heartbeat's lease.
const growAfter = 25 * time.Millisecond

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
	// entered counts every enter; armed is its value when the pending
	// grow check was armed: a guest running at the check that entered
	// before then has been running (or waiting to) since.
	entered, armed atomic.Int64
	// room is how many guests may run without a resize: GOMAXPROCS less
	// one, or more than any count at the cap; 0 until the first check.
	room atomic.Int64
	// growing and lowering are set while a check is armed.
	growing, lowering atomic.Bool

	mu    sync.Mutex
	base  int // GOMAXPROCS without guests, read at the first check after a return to it
	procs int // GOMAXPROCS as set here; 0 while the process has its own
}

// enter counts a guest that starts (or goes on) running Wasm code.
func (p *procReserve) enter() {
	p.entered.Add(1)
	if n := p.running.Add(1); n > p.room.Load() {
		p.armGrow()
	}
}

// armGrow arms a grow check, unless one is armed.
func (p *procReserve) armGrow() {
	if p.growing.CompareAndSwap(false, true) {
		p.armed.Store(p.entered.Load())
		time.AfterFunc(growAfter, p.grow)
	}
}

// leave counts a guest that stops running Wasm code: it sleeps or ended.
func (p *procReserve) leave() {
	n := p.running.Add(-1)
	if n <= p.room.Load()-procChunk && p.lowering.CompareAndSwap(false, true) {
		time.AfterFunc(lowerAfter, p.shrink)
	}
}

// grow gives the guests that have been running since the check was armed
// Ps of their own, and checks again later while guests still fill them.
func (p *procReserve) grow() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.procs == 0 {
		p.base = runtime.GOMAXPROCS(0)
	}
	// Every guest that entered since the check was armed may be one of
	// those running now; the rest have been running (or waiting to) all
	// along, and of those no more than there are Ps hold one.
	long := p.running.Load() - (p.entered.Load() - p.armed.Load())
	long = min(long, int64(max(p.procs, p.base)))
	if want := p.target(int(long)); want > max(p.procs, p.base) {
		p.resize(want)
	} else {
		p.resize(max(p.procs, p.base)) // the first check: learns the room
	}
	p.growing.Store(false)
	if p.running.Load() > p.room.Load() {
		p.armGrow()
	}
}

// shrink gives back the Ps the guests running now do not need.
func (p *procReserve) shrink() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.lowering.Store(false)
	if want := p.target(int(p.running.Load())); want < p.procs {
		p.resize(want)
		// A guest that entered meanwhile may have compared itself with
		// the room before it shrank: room is stored before running is
		// read again, so that such a guest is counted here.
		if want := p.target(int(p.running.Load())); want > p.procs {
			p.resize(want)
		}
	}
}

// target is the GOMAXPROCS for n running guests: the process's own while
// they leave a P free, else a P each beyond it, in whole chunks.
func (p *procReserve) target(n int) int {
	if n < p.base {
		return p.base
	}
	return p.base + min(roundUp(n, procChunk), maxGuestProcs)
}

// resize sets GOMAXPROCS to procs; at base it gives the process back its
// own setting (and Go's automatic updates of it).
func (p *procReserve) resize(procs int) {
	switch {
	case procs > p.base:
		if procs != p.procs {
			runtime.GOMAXPROCS(procs)
		}
		p.procs = procs
	case p.procs == 0: // already the process's own
	case os.Getenv("GOMAXPROCS") != "":
		runtime.GOMAXPROCS(p.base)
		p.procs = 0
	default:
		runtime.SetDefaultGOMAXPROCS()
		p.procs = 0
	}
	room := int64(max(p.procs, p.base) - 1)
	if p.procs >= p.base+maxGuestProcs {
		room = 1 << 62 // nothing left to add until it shrinks
	}
	p.room.Store(room)
}

func roundUp(n, m int) int { return (n + m - 1) / m * m }
