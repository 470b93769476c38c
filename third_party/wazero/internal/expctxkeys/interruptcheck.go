package expctxkeys

// InterruptCheckIntervalKey is a context.Context Value key. Its associated
// value is a uint64: how many loop back-edges compiled code takes between two
// checks of whether the module was closed, with WithCloseOnContextDone.
//
// [wasmorch patch: see third_party/wazero/PATCHES.md]
type InterruptCheckIntervalKey struct{}
