package wasmrt

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/tetratelabs/wazero/experimental"
	"golang.org/x/sys/unix"
)

// A long-running instance's linear memory is a slot of address space of
// its own rather than a Go allocation. A Go allocation of 64 KiB is
// resident wherever the Go heap had touched or reused that memory before
// (the runtime zeroes a reused span in full), counts towards the heap
// that sets the GC's goal, and lives as long as the GC lets it after the
// instance ends; a slot costs the pages the guest touches (one 4 KiB page
// for a small idle guest), and they go back to the OS as soon as the
// instance ends (MADV_DONTNEED, after which the slot reads as zeros for
// the next instance). Each slot is the size of the memory's maximum (the
// module's, or the instance's limit), so memory.grow never moves it, and
// it is readable and writable from the start: wazero checks every access
// against the memory's current length, so the guest never reaches the
// rest of its slot, nor a neighbour's (as with Go allocations side by
// side in the heap).
//
// Slots are carved from chunks of address space mapped with MAP_NORESERVE
// (not charged until written), one mapping per chunk and slot size,
// rather than one per instance: starting ten thousand instances at once
// then makes a few dozen mmap calls, not ten thousand (each takes the
// process's address-space lock against every page fault, and a thread
// blocked in a system call makes Go start another; per-instance mappings
// made the start burst of the density benchmark slower), and the process
// has a few dozen mappings, far below vm.max_map_count. A chunk whose
// slots are all free is unmapped, unless it is the only one with free
// slots of its size.
//
// Under strict overcommit accounting (vm.overcommit_memory 2), which
// ignores MAP_NORESERVE and would charge a chunk in full, on 32-bit hosts,
// and when the kernel refuses a chunk (address space or vm.max_map_count
// exhausted), the memory is a Go allocation as before.

// slots is the process's: every Runtime's instances share the chunks.
var slots = slotPool{classes: map[uint64]*slotClass{}}

// slotPool hands out slots, one class per slot size.
type slotPool struct {
	mu      sync.Mutex
	classes map[uint64]*slotClass
}

// slotClass is the chunks of one slot size.
type slotClass struct {
	size     uint64      // bytes per slot: a multiple of the OS page
	perChunk int         // slots per chunk
	open     []*memChunk // chunks with a free slot
}

// memChunk is one mapping of perChunk slots.
type memChunk struct {
	base unsafe.Pointer
	len  uintptr
	free []int32 // free slot indices
	used int
}

// chunkBytes is about how much address space a chunk maps; a chunk holds
// at least minPerChunk and at most maxPerChunk slots.
const (
	chunkBytes  = 256 << 20
	minPerChunk = 16
	maxPerChunk = 4096
)

// strictOvercommit reports whether the kernel accounts for every
// writable private mapping (vm.overcommit_memory 2); tests override it.
var strictOvercommit = sync.OnceValue(func() bool {
	b, err := os.ReadFile("/proc/sys/vm/overcommit_memory")
	if err != nil {
		return true // unknown: keep to Go allocations
	}
	mode, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return err != nil || mode == 2
})

// instanceMapping is a long-running instance's linear memory in a slot.
type instanceMapping struct {
	i       *instance
	chunk   *memChunk
	class   *slotClass
	slot    int32
	base    unsafe.Pointer
	max     uint64
	touched uint64 // the largest size given: what the guest may have written
}

// mapInstanceMemory gives i's linear memory a slot of maxBytes, or
// returns nil when it cannot (then the caller allocates on the Go heap).
func mapInstanceMemory(i *instance, maxBytes uint64) experimental.LinearMemory {
	if strconv.IntSize != 64 || maxBytes == 0 || strictOvercommit() {
		return nil
	}
	c, class, slot, ok := slots.take(pageRoundUp(maxBytes, osPage))
	if !ok {
		return nil
	}
	base := unsafe.Add(c.base, uint64(slot)*class.size)
	return &instanceMapping{i: i, chunk: c, class: class, slot: slot, base: base, max: maxBytes}
}

// take finds a free slot of size bytes, mapping a new chunk if needed.
func (p *slotPool) take(size uint64) (*memChunk, *slotClass, int32, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	class := p.classes[size]
	if class == nil {
		class = &slotClass{size: size, perChunk: int(min(max(chunkBytes/size, minPerChunk), maxPerChunk))}
		p.classes[size] = class
	}
	if len(class.open) == 0 {
		c, err := newChunk(class)
		if err != nil {
			return nil, nil, 0, false
		}
		class.open = append(class.open, c)
	}
	c := class.open[len(class.open)-1]
	slot := c.free[len(c.free)-1]
	c.free = c.free[:len(c.free)-1]
	c.used++
	if len(c.free) == 0 {
		class.open = class.open[:len(class.open)-1]
	}
	return c, class, slot, true
}

// newChunk maps a chunk of class's slots, all free. The mapping is made
// under the pool's lock: it happens once per perChunk instances.
func newChunk(class *slotClass) (*memChunk, error) {
	n := uintptr(class.size) * uintptr(class.perChunk)
	base, err := unix.MmapPtr(-1, 0, nil, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON|unix.MAP_NORESERVE)
	if err != nil {
		return nil, err
	}
	// Transparent huge pages would make a guest's first write fault in
	// 2 MiB where it uses 4 KiB (where THP is "always").
	_ = unix.Madvise(unsafe.Slice((*byte)(base), n), unix.MADV_NOHUGEPAGE)
	c := &memChunk{base: base, len: n, free: make([]int32, class.perChunk)}
	for s := range c.free { // the lowest slot is taken first
		c.free[s] = int32(class.perChunk - 1 - s)
	}
	return c, nil
}

// give takes back m's slot, its pages already returned; a chunk left
// with no slot in use is unmapped if another chunk of its size has room.
func (p *slotPool) give(m *instanceMapping) {
	var unmap *memChunk
	p.mu.Lock()
	c, class := m.chunk, m.class
	if len(c.free) == 0 {
		class.open = append(class.open, c)
	}
	c.free = append(c.free, m.slot)
	c.used--
	if c.used == 0 && len(class.open) > 1 {
		for k, o := range class.open {
			if o == c {
				class.open = append(class.open[:k], class.open[k+1:]...)
				break
			}
		}
		unmap = c
	}
	p.mu.Unlock()
	if unmap != nil {
		_ = unix.MunmapPtr(unmap.base, unmap.len)
	}
}

// Reallocate implements experimental.LinearMemory: the memory grows in
// place, within its slot.
func (m *instanceMapping) Reallocate(size uint64) []byte {
	if size > m.max || m.base == nil {
		return nil
	}
	m.touched = max(m.touched, size)
	m.i.memory.Store(int64(size))
	return unsafe.Slice((*byte)(m.base), size)
}

// Free implements experimental.LinearMemory: the pages the guest wrote go
// back to the OS and the slot, now zeros, to the pool. wazero calls it
// when the module closes, on the instance's goroutine once the guest has
// returned (run, or wazero's call path when a stopped guest is ended), so
// nothing runs on the memory any more.
func (m *instanceMapping) Free() {
	if m.base == nil {
		return
	}
	if used := pageRoundUp(m.touched, osPage); used > 0 {
		mem := unsafe.Slice((*byte)(m.base), used)
		if err := unix.Madvise(mem, unix.MADV_DONTNEED); err != nil {
			clear(mem) // the next instance must find zeros all the same
		}
	}
	slots.give(m)
	m.base = nil
	m.i.memory.Store(0)
}
