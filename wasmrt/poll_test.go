package wasmrt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// pollGuest is a real guest (ticker.wasm, not started) whose memory the
// poll_oneoff tests write subscriptions into, and whose nanosleep records
// what it was asked.
type pollGuest struct {
	mod    api.Module
	sleeps []int64
}

func newPollGuest(t *testing.T) *pollGuest {
	t.Helper()
	ctx := context.Background()
	wz := wazero.NewRuntime(ctx)
	t.Cleanup(func() { _ = wz.Close(ctx) })
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, wz); err != nil {
		t.Fatal(err)
	}
	g := &pollGuest{}
	mod, err := wz.InstantiateWithConfig(ctx, readTestModule(t, "ticker.wasm"), wazero.NewModuleConfig().
		WithStartFunctions().
		WithNanosleep(func(ns int64) { g.sleeps = append(g.sleeps, ns) }))
	if err != nil {
		t.Fatal(err)
	}
	g.mod = mod
	return g
}

// subscription writes WASI subscriptions at 1024, each a clock unless
// tag says otherwise, and returns poll_oneoff's parameters for them
// (events at 2048, their count at 4000).
func (g *pollGuest) subscription(tag byte, timeout uint64, flags uint16, n int) []uint64 {
	mem := g.mod.Memory()
	for i := range n {
		s := make([]byte, subSize)
		binary.LittleEndian.PutUint64(s[subUserdata:], 0x1122334455667788+uint64(i))
		s[subTag] = tag
		binary.LittleEndian.PutUint32(s[16:], 1) // CLOCK_MONOTONIC
		binary.LittleEndian.PutUint64(s[subTimeout:], timeout)
		binary.LittleEndian.PutUint16(s[subFlags:], flags)
		mem.Write(1024+uint32(i*subSize), s)
	}
	mem.Write(2048, bytes.Repeat([]byte{0xee}, 2*eventSize)) // stale bytes
	mem.WriteUint32Le(4000, 0xeeeeeeee)
	return []uint64{1024, 2048, uint64(n), 4000}
}

// result is what a poll_oneoff call left: errno, events, count, sleeps.
func (g *pollGuest) result(stack []uint64) string {
	events, _ := g.mod.Memory().Read(2048, 2*eventSize)
	count, _ := g.mod.Memory().ReadUint32Le(4000)
	s := fmt.Sprintf("errno %d, nevents %d, sleeps %v, events %x", stack[0], count, g.sleeps, events)
	g.sleeps = nil
	return s
}

// The runtime's poll_oneoff leaves the guest's memory, errno and sleeps
// exactly as wazero's does, for the calls it answers (one relative clock)
// and for those it hands to wazero.
func TestPollOneoffAnswersAsWazeroDoes(t *testing.T) {
	g := newPollGuest(t)
	ctx := withGuest(context.Background(), nil, func(ns int64) { g.sleeps = append(g.sleeps, ns) })
	for _, tc := range []struct {
		name    string
		tag     byte
		timeout uint64
		flags   uint16
		n       int
		in      uint64 // replaces the subscriptions' address when set
	}{
		{name: "relative clock", timeout: 100_000_000, n: 1},
		{name: "zero timeout", timeout: 0, n: 1},
		{name: "absolute clock", timeout: 5, flags: 1, n: 1},
		{name: "bad flags", timeout: 5, flags: 7, n: 1},
		{name: "fd_read on stdin", tag: 1, n: 1},
		{name: "bad tag", tag: 9, n: 1},
		{name: "two clocks", timeout: 3, n: 2},
		{name: "no subscription", n: 0},
		{name: "outside memory", timeout: 3, n: 1, in: 1 << 20},
	} {
		stack := g.subscription(tc.tag, tc.timeout, tc.flags, tc.n)
		if tc.in != 0 {
			stack[0] = tc.in
		}
		stockPollOneoff().Call(ctx, g.mod, stack)
		want := g.result(stack)

		stack = g.subscription(tc.tag, tc.timeout, tc.flags, tc.n)
		if tc.in != 0 {
			stack[0] = tc.in
		}
		pollOneoff(ctx, g.mod, stack)
		if got := g.result(stack); got != want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, got, want)
		}
	}
}

// A sleep costs no allocation, where wazero's poll_oneoff allocates an
// event per subscription: the garbage of a node of idle guests.
func TestPollOneoffSleepsWithoutGarbage(t *testing.T) {
	g := newPollGuest(t)
	ctx := withGuest(context.Background(), nil, func(int64) {})
	stack := make([]uint64, 4)
	params := g.subscription(0, 1, 0, 1)
	if n := testing.AllocsPerRun(100, func() {
		copy(stack, params)
		pollOneoff(ctx, g.mod, stack)
	}); n != 0 {
		t.Errorf("poll_oneoff on one relative clock: %.1f allocations, want none", n)
	}
	if n := testing.AllocsPerRun(100, func() {
		copy(stack, params)
		stockPollOneoff().Call(ctx, g.mod, stack)
	}); n == 0 {
		t.Errorf("wazero's poll_oneoff no longer allocates: pollOneoff's fast path may go")
	}
}
