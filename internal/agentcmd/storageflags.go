package agentcmd

import (
	"strings"

	"github.com/spf13/pflag"

	"github.com/wasmorch/wasmorch/internal/clierr"
	"github.com/wasmorch/wasmorch/worker"
)

// StorageFlags are up's and agent's flags for what a node gives instances
// to write to (state, issue 14; docs/storage.md).
type StorageFlags struct {
	maxScratch string
}

// Add adds the flags to f.
func (s *StorageFlags) Add(f *pflag.FlagSet) {
	f.StringVar(&s.maxScratch, "max-scratch", "1Gi", "the most scratch space (deploy --scratch) one Wasm instance may have on this node, under the data dir; 0: none")
}

// Apply sets the worker's config from the flags.
func (s *StorageFlags) Apply(wk *worker.Config) error {
	if strings.TrimSpace(s.maxScratch) == "0" {
		wk.MaxScratchBytes = -1
		return nil
	}
	n, err := ParseCapacity(s.maxScratch)
	if err != nil {
		return clierr.Errorf("use --max-scratch like 1Gi, 256Mi, a number of bytes, or 0 for none", "invalid --max-scratch: %v", err)
	}
	wk.MaxScratchBytes = n
	return nil
}
