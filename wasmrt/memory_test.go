package wasmrt

import "testing"

// TestPooledMemoryIsClearedForTheNextInstance: a buffer back from an
// instance is reused only cleared, also after growing within and beyond
// its capacity.
func TestPooledMemoryIsClearedForTheNextInstance(t *testing.T) {
	var p memoryPool
	for round := range 3 {
		m := p.Allocate(2*pageSize, 8*pageSize)
		buf := m.Reallocate(pageSize)
		for i, b := range buf {
			if b != 0 {
				t.Fatalf("round %d: byte %d of a new memory is %d", round, i, b)
			}
		}
		for i := range buf {
			buf[i] = 0xff
		}
		grown := m.Reallocate(2 * pageSize) // within the capacity
		if grown[pageSize-1] != 0xff || grown[pageSize] != 0 {
			t.Fatalf("round %d: growing within the capacity lost data or exposed old bytes", round)
		}
		for i := range grown {
			grown[i] = 0xee
		}
		if round == 2 {
			beyond := m.Reallocate(5 * pageSize) // a new buffer
			if len(beyond) != 5*pageSize || beyond[2*pageSize-1] != 0xee || beyond[2*pageSize] != 0 {
				t.Fatalf("growing beyond the capacity: len %d, data not carried over", len(beyond))
			}
		}
		if m.Reallocate(9*pageSize) != nil {
			t.Fatal("grew past the maximum")
		}
		m.Free()
	}
}
