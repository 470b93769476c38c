package main

import (
	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/controlplane"
)

// addBlobGCSettings adds the blob garbage collector's settings to up and
// server.
func addBlobGCSettings(cmd *cobra.Command, cp *controlplane.Config) {
	cmd.Flags().DurationVar(&cp.BlobGCInterval, "blob-gc-interval", controlplane.DefaultBlobGCInterval, "how often the leader deletes uploaded modules and image archives that no workload, instance or kept revision references (0: never)")
	cmd.Flags().DurationVar(&cp.BlobGCGrace, "blob-gc-grace", controlplane.DefaultBlobGCGrace, "how long a blob must have stayed unreferenced before it is deleted: the time allowed between an upload and the apply that uses it")
}

// addDebugFlag adds --debug-addr (Go's profiler) to up and server.
func addDebugFlag(cmd *cobra.Command, cp *controlplane.Config) {
	cmd.Flags().StringVar(&cp.DebugAddr, "debug-addr", "", "serve Go's profiler (/debug/pprof/) at HOST:PORT, for finding where a member spends its time; no authentication: keep it on loopback (default: off)")
}
