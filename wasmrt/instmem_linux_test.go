package wasmrt

import (
	"context"
	"errors"
	"slices"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// withOvercommit runs f with the kernel's accounting taken as strict
// (memories on the Go heap) or not (slots), whatever this machine's is.
func withOvercommit(t *testing.T, strict bool, f func(t *testing.T)) {
	saved := strictOvercommit
	strictOvercommit = func() bool { return strict }
	defer func() { strictOvercommit = saved }()
	name := "overcommit"
	if strict {
		name = "strict"
	}
	t.Run(name, f)
}

// mincore is mincore(2), which x/sys/unix has only on BSDs.
func mincore(b, vec []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if errno != 0 {
		return errno
	}
	return nil
}

// resident reports which OS pages of b are in memory.
func resident(t *testing.T, b []byte) []bool {
	t.Helper()
	vec := make([]byte, (uint64(len(b))+osPage-1)/osPage)
	if err := mincore(b, vec); err != nil {
		t.Fatalf("mincore: %v", err)
	}
	out := make([]bool, len(vec))
	for i, v := range vec {
		out[i] = v&1 != 0
	}
	return out
}

func TestInstanceMemoryCostsThePagesTheGuestTouches(t *testing.T) {
	i := &instance{}
	lm := i.Allocate(64<<10, 1<<20)
	m, ok := lm.(*instanceMapping)
	if !ok {
		t.Fatalf("Allocate gave a %T, want a slot of its own", lm)
	}
	buf := m.Reallocate(64 << 10)
	if len(buf) != 64<<10 || i.memory.Load() != 64<<10 {
		t.Fatalf("memory of %d bytes, recorded %d, want 64 KiB", len(buf), i.memory.Load())
	}
	buf[0], buf[len(buf)-1] = 1, 2
	got := resident(t, buf)
	want := make([]bool, len(got))
	want[0], want[len(want)-1] = true, true
	if !slices.Equal(got, want) {
		t.Fatalf("resident pages %v, want only the two written (%v)", got, want)
	}

	grown := m.Reallocate(1 << 20)
	if len(grown) != 1<<20 || unsafe.SliceData(grown) != unsafe.SliceData(buf) {
		t.Fatalf("grown to %d bytes at %p, want 1 MiB in place at %p", len(grown), unsafe.SliceData(grown), unsafe.SliceData(buf))
	}
	if grown[0] != 1 || grown[64<<10-1] != 2 {
		t.Fatal("growing lost what the guest wrote")
	}
	grown[len(grown)-1] = 3 // the new part is writable
	if i.memory.Load() != 1<<20 {
		t.Errorf("recorded %d bytes, want 1 MiB", i.memory.Load())
	}
	if m.Reallocate(1<<20+64<<10) != nil {
		t.Error("grew past its maximum")
	}

	m.Free()
	if i.memory.Load() != 0 {
		t.Errorf("recorded %d bytes after Free, want 0", i.memory.Load())
	}
	if r := resident(t, grown); slices.Contains(r, true) {
		t.Errorf("resident pages after Free: %v, want none", r)
	}
	m.Free() // a second Free does nothing

	// The slot, taken again, holds nothing of the instance before.
	j := &instance{}
	again := j.Allocate(64<<10, 1<<20).Reallocate(1 << 20)
	if unsafe.SliceData(again) != unsafe.SliceData(grown) {
		t.Fatalf("the next memory is at %p, want the freed slot %p", unsafe.SliceData(again), unsafe.SliceData(grown))
	}
	if again[0] != 0 || again[64<<10-1] != 0 || again[len(again)-1] != 0 {
		t.Error("the slot still holds what the instance before wrote")
	}
}

func TestUnusedChunksAreUnmapped(t *testing.T) {
	const size = 32 << 20 // a slot size no other test uses: minPerChunk slots a chunk
	var ms []*instanceMapping
	for range minPerChunk + 1 { // one more than a chunk holds
		m, ok := (&instance{}).Allocate(0, size).(*instanceMapping)
		if !ok {
			t.Fatal("Allocate gave no slot")
		}
		m.Reallocate(osPage)[0] = 1
		ms = append(ms, m)
	}
	per := ms[0].class.perChunk
	if ms[per].chunk == ms[0].chunk {
		t.Fatalf("slot %d is in the first chunk of %d slots", per, per)
	}
	first, second := ms[0].chunk, ms[per].chunk
	for _, m := range ms {
		m.Free()
	}
	vec := make([]byte, 1)
	var unmapped, kept int
	for _, c := range []*memChunk{first, second} {
		switch err := mincore(unsafe.Slice((*byte)(c.base), osPage), vec); {
		case errors.Is(err, unix.ENOMEM):
			unmapped++
		case err == nil:
			kept++
		default:
			t.Fatal(err)
		}
	}
	if unmapped != 1 || kept != 1 {
		t.Errorf("%d chunks unmapped and %d kept, want one of each (the last with room is kept)", unmapped, kept)
	}
}

func TestStrictOvercommitKeepsMemoryOnTheHeap(t *testing.T) {
	saved := strictOvercommit
	strictOvercommit = func() bool { return true }
	defer func() { strictOvercommit = saved }()
	if m := (&instance{}).Allocate(64<<10, 1<<20); m == nil {
		t.Fatal("no memory")
	} else if _, ok := m.(*trackedMemory); !ok {
		t.Errorf("Allocate gave a %T under strict overcommit, want a Go allocation", m)
	}
}

// A guest grows its memory to the instance's limit and no further, and a
// Go guest (which grows and touches its memory) runs, in a slot or on the
// Go heap.
func TestGuestsRunOnMappedMemory(t *testing.T) {
	for _, strict := range []bool{false, true} {
		withOvercommit(t, strict, func(t *testing.T) {
			r := newTestRuntime(t, Config{})
			stdout := newOutput()
			inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{
				ID: "oom", Artifact: testArtifact(t, "oom.wasm"), MemoryBytes: 16 << 20, Stdout: stdout,
			})
			if err != nil {
				t.Fatal(err)
			}
			if exit := waitExit(t, inst); exit.Code != 4 || stdout.String() != "memory.grow failed\n" {
				t.Errorf("oom.wasm: exit %+v, stdout %q; want code 4 and memory.grow failed", exit, stdout.String())
			}
			if raceEnabled {
				return // compiling a Go module takes 15 s under the race detector
			}
			stdout = newOutput()
			inst, err = r.Start(context.Background(), runtimeapi.InstanceSpec{
				ID: "gohello", Artifact: testArtifact(t, "gohello.wasm"), Args: []string{"x"}, Stdout: stdout,
			})
			if err != nil {
				t.Fatal(err)
			}
			if exit := waitExit(t, inst); exit.Code != 0 || stdout.String() != "hello from go\nargs: x\n" {
				t.Errorf("gohello: exit %+v, stdout %q", exit, stdout.String())
			}
		})
	}
}

// A stopped instance gives its memory back, whichever of wazero's
// watcher and its own sleep noticed the stop first.
func TestStoppedInstanceFreesItsMemory(t *testing.T) {
	r := newTestRuntime(t, Config{})
	for n := range 20 {
		stdout := newOutput()
		inst, err := r.Start(context.Background(), runtimeapi.InstanceSpec{
			ID: "sleep", Artifact: testArtifact(t, "sleep.wasm"), MemoryBytes: 1 << 20, Stdout: stdout,
		})
		if err != nil {
			t.Fatal(err)
		}
		stdout.waitFor(t, "sleeping")
		i := inst.(*instance)
		if i.memory.Load() == 0 {
			t.Fatal("a running instance records no memory")
		}
		if exit := stopInstance(t, inst); exit.Reason != runtimeapi.ReasonStopped {
			t.Fatalf("exit %+v, want Stopped", exit)
		}
		if got := i.memory.Load(); got != 0 {
			t.Fatalf("stop %d: %d bytes of memory still held after the instance ended", n, got)
		}
	}
}
