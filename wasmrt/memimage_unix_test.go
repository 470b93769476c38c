//go:build unix

package wasmrt

import (
	"bytes"
	"fmt"
	"testing"
	"unsafe"
)

// TestMappedMemoryStartsAsTheImageEveryTime: a memory from the image has
// the image's content; it grows in place up to its limit and no further;
// and what an instance wrote, in the image and beyond it, everywhere or
// here and there, is gone for the next instance that gets the same
// mapping back: with the kernel's page flags (Linux) and without.
func TestMappedMemoryStartsAsTheImageEveryTime(t *testing.T) {
	for _, comparePages := range []bool{false, true} {
		t.Run(fmt.Sprintf("comparePages=%v", comparePages), func(t *testing.T) {
			testMappedMemoryResets(t, comparePages)
		})
	}
}

func testMappedMemoryResets(t *testing.T, comparePages bool) {
	plan, err := planImage(mustHex(t, segmentsWasm))
	if err != nil {
		t.Fatal(err)
	}
	im, err := newMemImage(plan)
	if err != nil {
		t.Fatal(err)
	}
	im.comparePages = comparePages
	if !comparePages {
		probe := im.Allocate(plan.minBytes, pageSize*2).(*mappedMemory)
		readable := readPageFlags(probe.base, make([]uint64, 1))
		probe.unmap()
		if !readable {
			t.Skip("the kernel gives no page flags here (not Linux, or no /proc/self/pagemap): resets compare every page")
		}
	}
	initial := make([]byte, plan.minBytes)
	copy(initial, plan.image)
	const limit = 8 * pageSize
	// write fills b, or (sparse) writes one byte in every third OS page.
	write := func(b []byte, v byte, sparse bool) {
		step := 1
		if sparse {
			step = 3 * int(osPage)
		}
		for i := 0; i < len(b); i += step {
			b[i] = v
		}
	}

	var base *byte
	for round := range 4 {
		sparse := round%2 == 1
		m := im.Allocate(plan.minBytes, limit)
		if _, ok := m.(*mappedMemory); !ok {
			t.Fatalf("round %d: a %T, want a mapping of the image", round, m)
		}
		buf := m.Reallocate(plan.minBytes)
		if round == 0 {
			base = unsafe.SliceData(buf)
		} else if unsafe.SliceData(buf) != base {
			t.Fatalf("round %d: a new mapping, want the one the last instance freed (the reset is what is tested)", round)
		}
		if !bytes.Equal(buf, initial) {
			t.Fatalf("round %d: %d bytes of a new memory differ from the image", round, countDiff(buf, initial))
		}
		write(buf, 0xab, sparse)
		grown := m.Reallocate(5 * pageSize)
		if unsafe.SliceData(grown) != unsafe.SliceData(buf) || len(grown) != 5*pageSize {
			t.Fatalf("round %d: growing moved the memory or got %d bytes", round, len(grown))
		}
		if grown[0] != 0xab || bytes.ContainsFunc(grown[plan.minBytes:], func(r rune) bool { return r != 0 }) {
			t.Fatalf("round %d: growing lost data or exposed old bytes", round)
		}
		write(grown, 0xcd, sparse)
		if m.Reallocate(limit) == nil {
			t.Fatalf("round %d: could not grow to the limit", round)
		}
		if m.Reallocate(limit+pageSize) != nil {
			t.Fatalf("round %d: grew past the limit", round)
		}
		m.Free()
	}

	// A memory freed after its image closed is unmapped, not kept.
	m := im.Allocate(plan.minBytes, limit)
	m.Reallocate(plan.minBytes)
	im.close()
	m.Free()
	if mm := m.(*mappedMemory); mm.base != nil {
		t.Error("a memory of a closed image was kept")
	}
	if len(im.idle) != 0 {
		t.Errorf("%d memories kept by a closed image", len(im.idle))
	}
}

// TestMappedMemoriesAreKeptWithinBounds: at most maxIdleMappings memories
// wait for an instance, and each instance has its own.
func TestMappedMemoriesAreKeptWithinBounds(t *testing.T) {
	plan, err := planImage(mustHex(t, segmentsWasm))
	if err != nil {
		t.Fatal(err)
	}
	im, err := newMemImage(plan)
	if err != nil {
		t.Fatal(err)
	}
	defer im.close()
	var ms []*mappedMemory
	seen := map[unsafe.Pointer]bool{}
	for range maxIdleMappings + 3 {
		m := im.Allocate(plan.minBytes, 4*pageSize).(*mappedMemory)
		m.Reallocate(plan.minBytes)
		if seen[m.base] {
			t.Fatal("two live instances share a memory")
		}
		seen[m.base] = true
		ms = append(ms, m)
	}
	for _, m := range ms {
		m.Free()
	}
	im.mu.Lock()
	idle := len(im.idle)
	im.mu.Unlock()
	if idle != maxIdleMappings {
		t.Errorf("%d memories kept, want %d", idle, maxIdleMappings)
	}
	unmapped := 0
	for _, m := range ms {
		if m.base == nil {
			unmapped++
		}
	}
	if unmapped != 3 {
		t.Errorf("%d memories unmapped, want the 3 beyond the bound", unmapped)
	}
}
