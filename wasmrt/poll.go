package wasmrt

import (
	"context"
	"encoding/binary"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// A guest that sleeps calls poll_oneoff with one relative clock
// subscription (wasi-libc's nanosleep, Rust's and Zig's thread::sleep,
// TinyGo's time.Sleep). wazero's poll_oneoff allocates an event per
// subscription, so a node of thousands of idle guests that wake now and
// then made garbage at every wake-up: 2,000 tickers, ~1 MiB/s, nearly all
// of an idle node's allocations. The runtime's poll_oneoff answers that
// one case itself, writing exactly what wazero writes and sleeping in the
// instance's own nanosleep, and hands every other call to wazero's.

// Offsets in a WASI subscription (48 bytes) and event (32 bytes).
const (
	subUserdata = 0  // u64, copied to the event
	subTag      = 8  // u8: 0 = clock
	subTimeout  = 24 // u64, nanoseconds when relative
	subFlags    = 40 // u16: 0 = relative, 1 = absolute
	subSize     = 48
	eventErrno  = 8  // u16
	eventType   = 10 // u8, written as u32 by wazero
	eventSize   = 32
)

// wazerosPollOneoff makes runtimes created while it is set use wazero's
// poll_oneoff for every call: the baseline BenchmarkIdleGuests measures
// against.
var wazerosPollOneoff bool

// stockPollOneoff is wazero's poll_oneoff, for the calls pollOneoff does
// not answer itself.
var stockPollOneoff = sync.OnceValue(func() api.GoModuleFunction {
	ctx := context.Background()
	wz := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer wz.Close(ctx)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, wz); err != nil {
		panic("wasm runtime: wazero's WASI: " + err.Error())
	}
	return wz.Module(wasi_snapshot_preview1.ModuleName).ExportedFunctionDefinitions()["poll_oneoff"].GoFunction().(api.GoModuleFunction)
})

// pollOneoff is WASI's poll_oneoff: a call that waits on a Wasm service's
// sockets is answered by its socket table, one relative clock
// subscription here without allocating, anything else by wazero.
func pollOneoff(ctx context.Context, mod api.Module, stack []uint64) {
	g := guestOf(ctx)
	if g.socks != nil && g.socks.pollOneoff(mod, stack) {
		return // it waited on the instance's sockets (sock_linux.go)
	}
	in, out, n, nevents := uint32(stack[0]), uint32(stack[1]), uint32(stack[2]), uint32(stack[3])
	sleep := g.sleep
	mem := mod.Memory()
	if n != 1 || sleep == nil || mem == nil {
		stockPollOneoff().Call(ctx, mod, stack)
		return
	}
	sub, ok := mem.Read(in, subSize)
	if !ok || sub[subTag] != 0 || binary.LittleEndian.Uint16(sub[subFlags:]) != 0 {
		stockPollOneoff().Call(ctx, mod, stack) // its errors, and absolute clocks
		return
	}
	ev, ok := mem.Read(out, eventSize)
	if !ok || !mem.WriteUint32Le(nevents, 1) {
		stockPollOneoff().Call(ctx, mod, stack) // EFAULT
		return
	}
	timeout := int64(binary.LittleEndian.Uint64(sub[subTimeout:]))
	clear(ev)
	copy(ev, sub[subUserdata:subUserdata+8])
	ev[eventErrno], ev[eventErrno+1] = 0, 0
	binary.LittleEndian.PutUint32(ev[eventType:], 0) // clock
	if timeout > 0 {
		sleep(timeout)
	}
	stack[0] = 0
}
