//go:build !linux

package wasmrt

import "github.com/tetratelabs/wazero/experimental"

// mapInstanceMemory is Linux's (instmem_linux.go); elsewhere a
// long-running instance's memory is a Go allocation.
func mapInstanceMemory(*instance, uint64) experimental.LinearMemory { return nil }
