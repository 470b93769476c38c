package worker

import (
	"os"
	"runtime/debug"
)

// DefaultGCPercent is the Go GC target a worker sets. Every function
// request allocates a fresh sandbox whose linear memory (128 KiB for a
// small C module) lives on the Go heap for the request's few microseconds;
// with the default of 100 and the small live heap of a worker, the GC runs
// every few dozen requests and the runtime keeps returning and faulting in
// the same pages (madvise and page clearing were a third of a request's
// CPU). At 400 a small C function's call costs about half (BENCHMARKS.md);
// the soft memory limit (GCMemoryLimit) keeps the larger heap goal from
// growing past what the node can spare: near the limit the GC runs as
// often as it must.
const DefaultGCPercent = 400

// tuneGC applies the config's GC settings unless the environment chose.
func tuneGC(cfg Config) {
	if cfg.GCPercent > 0 && os.Getenv("GOGC") == "" {
		debug.SetGCPercent(cfg.GCPercent)
	}
	if cfg.GCMemoryLimit > 0 && os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(cfg.GCMemoryLimit)
	}
}
