package wasmrt

import (
	"sync"

	"github.com/tetratelabs/wazero/experimental"
)

// A function request's sandbox lives for microseconds, but its linear
// memory (128 KiB for a small C module) is a large Go allocation: fresh
// pages to fault in and zero, and a GC cycle every few dozen requests
// that hands them back to the OS. Function instances instead take their
// memory from a pool of cleared buffers, and clear what they used when
// they close: no state survives a request, and the pages stay warm.

// maxPooledMemory bounds the buffers kept for reuse; larger memories are
// ordinary allocations. Clearing costs what was used, while a fresh
// allocation's untouched pages cost nothing: a Go (wasip1) guest's memory
// of several MiB is cheaper to allocate afresh (measured: 6 ms per call
// either way unpooled, 16 ms pooled with GOGC=400, when the GC empties the
// pool less often). A function whose initial memory is larger starts its
// instances from a memory image instead, where it can (memimage.go).
const maxPooledMemory = 1 << 20

// memoryPool is an experimental.MemoryAllocator of cleared buffers, one
// sync.Pool per capacity (the GC empties sync.Pools, so an idle worker
// keeps nothing).
type memoryPool struct {
	pools sync.Map // capacity in bytes → *sync.Pool of *[]byte (len 0, zeroed up to cap)
}

var _ experimental.MemoryAllocator = (*memoryPool)(nil)

// Allocate implements experimental.MemoryAllocator.
func (p *memoryPool) Allocate(capacity, maxBytes uint64) experimental.LinearMemory {
	m := &pooledMemory{pool: p, max: maxBytes}
	if capacity <= maxPooledMemory {
		if b, ok := p.poolFor(capacity).Get().(*[]byte); ok {
			m.buf = (*b)[:0]
			return m
		}
	}
	m.buf = make([]byte, 0, capacity)
	return m
}

func (p *memoryPool) poolFor(capacity uint64) *sync.Pool {
	if sp, ok := p.pools.Load(capacity); ok {
		return sp.(*sync.Pool)
	}
	sp, _ := p.pools.LoadOrStore(capacity, &sync.Pool{})
	return sp.(*sync.Pool)
}

// put clears the part of b that was used and keeps it for reuse, if it
// is small enough to be worth it; a larger b is left to the GC.
func (p *memoryPool) put(b []byte) {
	if c := uint64(cap(b)); c > 0 && c <= maxPooledMemory {
		clear(b)
		b = b[:0]
		p.poolFor(c).Put(&b)
	}
}

// pooledMemory is one instance's linear memory. Its buffer is zeroed
// beyond its length up to its capacity, so growing within the capacity
// needs no clearing.
type pooledMemory struct {
	pool *memoryPool
	buf  []byte
	max  uint64
}

// Reallocate implements experimental.LinearMemory.
func (m *pooledMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
		return m.buf
	}
	grown := make([]byte, size, min(max(size, 2*uint64(cap(m.buf))), m.max))
	copy(grown, m.buf)
	m.pool.put(m.buf)
	m.buf = grown
	return m.buf
}

// Free implements experimental.LinearMemory: the buffer goes back to the
// pool, cleared.
func (m *pooledMemory) Free() {
	if m.buf != nil {
		m.pool.put(m.buf)
		m.buf = nil
	}
}
