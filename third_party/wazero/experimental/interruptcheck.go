package experimental

import (
	"context"

	"github.com/tetratelabs/wazero/internal/expctxkeys"
)

// DefaultInterruptCheckInterval is how many loop back-edges the compiler's
// code takes between two exits to Go when the runtime was configured with
// RuntimeConfig.WithCloseOnContextDone, unless the call's context says
// otherwise (WithInterruptCheckInterval).
//
// Each exit checks whether the module was closed (by the context's end, its
// deadline or CloseWithExitCode) and lets the Go scheduler preempt the
// goroutine (for another goroutine, or for the garbage collector's
// stop-the-world). Exiting at every back-edge, as wazero does upstream, costs
// an exit from machine code per loop iteration; with this interval a loop's
// check is a decrement of a counter, and a busy loop still leaves for Go
// within this many iterations.
//
// [wasmorch patch: see third_party/wazero/PATCHES.md]
const DefaultInterruptCheckInterval = 256

// WithInterruptCheckInterval returns a context with which the calls made with
// it leave compiled code for Go once every interval loop back-edges (see
// DefaultInterruptCheckInterval). 1 is wazero's upstream behaviour, an exit at
// every back-edge; 0 is taken as 1. It has no effect on the interpreter, nor
// without RuntimeConfig.WithCloseOnContextDone.
//
// [wasmorch patch: see third_party/wazero/PATCHES.md]
func WithInterruptCheckInterval(ctx context.Context, interval uint64) context.Context {
	if interval == 0 {
		interval = 1
	}
	return context.WithValue(ctx, expctxkeys.InterruptCheckIntervalKey{}, interval)
}
