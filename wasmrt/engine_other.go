//go:build !unix

package wasmrt

// executableMemory is false where it is not checked: the interpreter runs
// modules there.
func executableMemory() bool { return false }
