//go:build unix

package wasmrt

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/tetratelabs/wazero/experimental"
	"golang.org/x/sys/unix"
)

// memImage is a module's initial memory in a file (a memfd on Linux), the
// memory allocator of the instances that start from it. An instance's
// memory is a private, copy-on-write mapping of the file: it costs the
// pages the instance writes rather than a copy of the data segments, and
// what it writes is its own. The whole memory limit is reserved up front
// (address space only, PROT_NONE) and made accessible as the instance
// grows, so that growing never moves the memory.
//
// A request's instance faults in and copies ~140 pages of a Go guest's
// image, and unmapping them costs about as much again, so a memory that
// an instance is done with is kept for the next one (up to
// maxIdleMappings, for idleMappingTTL): its pages that differ from the
// image are copied back from it, and those beyond it cleared, which is
// cheaper than faulting them in again. The next instance then starts from
// memory equal to the image, as a new mapping would.
type memImage struct {
	file     *os.File
	fileSize uint64 // the image rounded up to whole OS pages
	minBytes uint64 // the initial memory's size
	// view is the file mapped read-only and shared, fileSize bytes; resets
	// read it under viewMu, and close unmaps it under viewMu.
	view   []byte
	viewMu sync.RWMutex

	comparePages bool // reset compares every page, without the kernel's page flags (tests)

	mu     sync.Mutex
	idle   []*mappedMemory // reset to the image, most recently used last
	trim   *time.Timer     // unmaps idle mappings unused for idleMappingTTL; nil until needed
	closed bool
}

// maxIdleMappings bounds the memories kept per image: each holds the pages
// an instance touched (about 1 MiB for a Go guest).
const maxIdleMappings = 4

// idleMappingTTL is how long a kept memory waits for an instance before it
// is unmapped.
const idleMappingTTL = 10 * time.Second

var _ experimental.MemoryAllocator = (*memImage)(nil)

// osPage is the host's page size.
var osPage = uint64(os.Getpagesize())

func pageRoundUp(n, to uint64) uint64 { return (n + to - 1) / to * to }

// newMemImage keeps p's image for instances to map. It needs 64-bit
// addresses (an instance reserves its whole memory limit).
func newMemImage(p *dataPlan) (*memImage, error) {
	if strconv.IntSize != 64 {
		return nil, fmt.Errorf("%w: a 32-bit host", errNoPlan)
	}
	f, err := imageFile()
	if err != nil {
		return nil, fmt.Errorf("memory image: %w", err)
	}
	im := &memImage{file: f, fileSize: pageRoundUp(uint64(len(p.image)), osPage), minBytes: p.minBytes}
	if _, err := f.Write(p.image); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("memory image: %w", err)
	}
	if err := f.Truncate(int64(im.fileSize)); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("memory image: %w", err)
	}
	if im.fileSize > 0 {
		if im.view, err = unix.Mmap(int(f.Fd()), 0, int(im.fileSize), unix.PROT_READ, unix.MAP_SHARED); err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("memory image: %w", err)
		}
	}
	return im, nil
}

// close unmaps the idle memories and lets go of the file and its view;
// the memories of running instances keep the file's pages, and are
// unmapped when freed.
func (im *memImage) close() {
	im.mu.Lock()
	im.closed = true
	idle := im.idle
	im.idle = nil
	if im.trim != nil {
		im.trim.Stop()
	}
	im.mu.Unlock()
	for _, m := range idle {
		m.unmap()
	}
	im.viewMu.Lock()
	if im.view != nil {
		_ = unix.Munmap(im.view)
		im.view = nil
	}
	im.viewMu.Unlock()
	_ = im.file.Close()
}

// Allocate implements experimental.MemoryAllocator: a kept memory, or a
// new mapping. If the host refuses the mappings, the memory is an
// ordinary Go slice with the image copied in: slower, the same content.
func (im *memImage) Allocate(capacity, maxBytes uint64) experimental.LinearMemory {
	if m := im.reuse(maxBytes); m != nil {
		return m
	}
	if m, err := im.mapMemory(maxBytes); err == nil {
		return m
	}
	buf := make([]byte, im.minBytes, max(capacity, im.minBytes))
	im.viewMu.RLock()
	copy(buf, im.view)
	im.viewMu.RUnlock()
	return &heapImageMemory{buf: buf, max: maxBytes}
}

// reuse takes a kept memory that can hold maxBytes, if there is one.
func (im *memImage) reuse(maxBytes uint64) *mappedMemory {
	im.mu.Lock()
	defer im.mu.Unlock()
	for n := len(im.idle); n > 0; n = len(im.idle) {
		m := im.idle[n-1]
		im.idle = im.idle[:n-1]
		if m.reserved >= maxBytes {
			m.max = maxBytes
			return m
		}
		m.unmap() // for a smaller limit (the same module has one): not for this one
	}
	return nil
}

// mapMemory reserves maxBytes of address space and maps the image at its
// start.
func (im *memImage) mapMemory(maxBytes uint64) (*mappedMemory, error) {
	reserved := pageRoundUp(max(maxBytes, im.minBytes, im.fileSize), osPage)
	base, err := unix.MmapPtr(-1, 0, nil, uintptr(reserved), unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return nil, err
	}
	if im.fileSize > 0 {
		_, err = unix.MmapPtr(int(im.file.Fd()), 0, base, uintptr(im.fileSize), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_FIXED)
		if err != nil {
			_ = unix.MunmapPtr(base, uintptr(reserved))
			return nil, err
		}
	}
	return &mappedMemory{im: im, base: base, reserved: reserved, accessible: im.fileSize, max: maxBytes}, nil
}

// release takes back a memory an instance is done with: reset to the
// image and kept, or unmapped.
func (im *memImage) release(m *mappedMemory) {
	im.mu.Lock()
	keep := !im.closed && len(im.idle) < maxIdleMappings
	im.mu.Unlock()
	if !keep || !m.reset() {
		m.unmap()
		return
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if im.closed || len(im.idle) >= maxIdleMappings {
		m.unmap()
		return
	}
	m.lastUsed = time.Now()
	im.idle = append(im.idle, m)
	if im.trim == nil {
		im.trim = time.AfterFunc(idleMappingTTL, im.trimIdle)
	} else if len(im.idle) == 1 {
		im.trim.Reset(idleMappingTTL)
	}
}

// trimIdle unmaps the memories kept for longer than idleMappingTTL.
func (im *memImage) trimIdle() {
	im.mu.Lock()
	var old []*mappedMemory
	cutoff := time.Now().Add(-idleMappingTTL)
	kept := im.idle[:0]
	for _, m := range im.idle {
		if m.lastUsed.Before(cutoff) {
			old = append(old, m)
		} else {
			kept = append(kept, m)
		}
	}
	clear(im.idle[len(kept):])
	im.idle = kept
	if len(kept) > 0 && !im.closed {
		im.trim.Reset(time.Until(kept[0].lastUsed.Add(idleMappingTTL)))
	}
	im.mu.Unlock()
	for _, m := range old {
		m.unmap()
	}
}

// mappedMemory is one instance's memory: the image's copy-on-write mapping,
// then anonymous zero pages made accessible as the memory grows.
type mappedMemory struct {
	im         *memImage
	base       unsafe.Pointer
	reserved   uint64 // bytes of address space mapped at base
	accessible uint64 // bytes from base readable and writable
	max        uint64
	lastUsed   time.Time // when it was kept
	flags      []uint64  // reset's page flags, kept for the next reset
}

// Reallocate implements experimental.LinearMemory: the memory grows in
// place.
func (m *mappedMemory) Reallocate(size uint64) []byte {
	if size > m.max || m.base == nil {
		return nil
	}
	if size > m.accessible {
		grow := pageRoundUp(size, osPage)
		if err := unix.Mprotect(m.bytes(m.accessible, grow), unix.PROT_READ|unix.PROT_WRITE); err != nil {
			return nil // the guest's memory.grow fails
		}
		m.accessible = grow
	}
	return m.bytes(0, size)
}

// Free implements experimental.LinearMemory: the memory goes back to its
// image, for the next instance.
func (m *mappedMemory) Free() {
	if m.base != nil {
		m.im.release(m)
	}
}

func (m *mappedMemory) bytes(from, to uint64) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(m.base, from)), to-from)
}

// zeroPage is a page of zeros to compare pages with.
var zeroPage = make([]byte, 64<<10)

// reset makes the memory equal to the image again, as far as it is
// accessible: a page that differs from the image is copied back, and a
// page beyond it that is not zero is cleared. Where the kernel says which
// pages the instance wrote (Linux's pagemap), only those are looked at: a
// page still mapped from the image's file, or not mapped at all, is the
// image's or zero. Elsewhere every page is compared; reading a page the
// instance never touched maps it (the file's page, or the zero page) and
// costs no copy. It reports false if the image is gone.
func (m *mappedMemory) reset() bool {
	m.im.viewMu.RLock()
	defer m.im.viewMu.RUnlock()
	view := m.im.view
	if uint64(len(view)) != m.im.fileSize {
		return false
	}
	pages := m.accessible / osPage
	if uint64(cap(m.flags)) < pages {
		m.flags = make([]uint64, pages)
	}
	flags := m.flags[:pages]
	if m.im.comparePages || !readPageFlags(m.base, flags) {
		m.compareAll(view)
		return true
	}
	for i, f := range flags {
		if f&(pagePresent|pageSwapped) == 0 {
			continue // never touched, or the file's page dropped
		}
		at := uint64(i) * osPage
		mem := m.bytes(at, at+osPage)
		switch {
		case at < m.im.fileSize:
			if f&pageFile == 0 { // written: a private copy
				copy(mem, view[at:at+osPage])
			}
		case f&(pageExclusive|pageSwapped) != 0 || !bytes.Equal(mem, zeroPage[:osPage]):
			clear(mem)
		}
	}
	return true
}

// compareAll is reset without page flags: every page is compared.
func (m *mappedMemory) compareAll(view []byte) {
	const chunk = 16 << 10 // compare and copy in chunks of a few pages
	for at := uint64(0); at < m.im.fileSize; at += chunk {
		end := min(at+chunk, m.im.fileSize)
		if mem := m.bytes(at, end); !bytes.Equal(mem, view[at:end]) {
			copy(mem, view[at:end])
		}
	}
	for at := m.im.fileSize; at < m.accessible; at += chunk {
		end := min(at+chunk, m.accessible)
		if mem := m.bytes(at, end); !bytes.Equal(mem, zeroPage[:end-at]) {
			clear(mem)
		}
	}
}

// unmap returns the memory's address space and pages to the OS.
func (m *mappedMemory) unmap() {
	if m.base != nil {
		_ = unix.MunmapPtr(m.base, uintptr(m.reserved))
		m.base = nil
	}
}

// heapImageMemory is the fallback memory: a Go slice that starts as a copy
// of the image (wazero asks for the initial size first).
type heapImageMemory struct {
	buf []byte
	max uint64
}

// Reallocate implements experimental.LinearMemory.
func (m *heapImageMemory) Reallocate(size uint64) []byte {
	if size > m.max {
		return nil
	}
	if size <= uint64(cap(m.buf)) {
		m.buf = m.buf[:size]
	} else {
		m.buf = append(m.buf, make([]byte, size-uint64(len(m.buf)))...)
	}
	return m.buf
}

// Free implements experimental.LinearMemory.
func (m *heapImageMemory) Free() { m.buf = nil }
