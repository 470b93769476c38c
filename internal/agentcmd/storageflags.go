package agentcmd

import (
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/wasmorch/wasmorch/internal/clierr"
	"github.com/wasmorch/wasmorch/worker"
)

// StorageFlags are up's and agent's flags for what a node gives instances
// to write to (state, issue 14; docs/storage.md).
type StorageFlags struct {
	maxScratch  string
	allowMounts []string
}

// Add adds the flags to f.
func (s *StorageFlags) Add(f *pflag.FlagSet) {
	f.StringSliceVar(&s.allowMounts, "allow-mount", nil, "host directories DIR[,DIR...] that workloads may mount (deploy --mount), with what is below them; none by default")
	f.StringVar(&s.maxScratch, "max-scratch", "1Gi", "the most scratch space (deploy --scratch) one instance may have on this node (a Wasm instance: under the data dir; a container: a tmpfs); 0: none")
}

// Apply sets the worker's config from the flags.
func (s *StorageFlags) Apply(wk *worker.Config) error {
	for _, d := range s.allowMounts {
		if !filepath.IsAbs(d) {
			return clierr.Errorf("use --allow-mount with absolute directories, e.g. --allow-mount /srv,/tmp", "invalid --allow-mount %q: not an absolute path", d)
		}
		wk.AllowedMounts = append(wk.AllowedMounts, filepath.Clean(d))
	}
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
