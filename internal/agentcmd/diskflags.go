package agentcmd

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/wasmorch/wasmorch/internal/clierr"
	"github.com/wasmorch/wasmorch/worker"
)

// DiskFlags are a worker's bounds on its disk (`up` and `agent`): its
// instance logs, the free space below which it reports DiskPressure, and
// its module cache.
type DiskFlags struct {
	instanceLog, logBudget, minFree, moduleCache string
}

// Add adds the flags, with the worker's defaults (diskflags_test.go holds
// them equal).
func (d *DiskFlags) Add(f *pflag.FlagSet) {
	f.StringVar(&d.instanceLog, "instance-log-size", "1Mi",
		"output kept per instance, e.g. 1Mi (a current and a rotated file, half each)")
	f.StringVar(&d.logBudget, "log-budget", "1Gi",
		"output kept by all instances of the node together, e.g. 1Gi; beyond it the oldest output is deleted first")
	f.StringVar(&d.minFree, "min-free-disk", "512Mi,5%",
		"free space the worker keeps on the disk of its data dir, a size, a percentage of the disk, or both (the larger holds), e.g. 512Mi,5%; below it the node reports DiskPressure and takes no new instances (0: never)")
	f.StringVar(&d.moduleCache, "module-cache-size", "512Mi",
		"modules kept on disk beside those the node's instances use, e.g. 64Mi (compiled code as much again): the least recently used go first, and a module larger than this is refused and placed on another node (0: no bound)")
}

// Apply sets the worker's LogBytesPerInstance, LogBytesTotal,
// DiskPressureFree, DiskPressureFreePercent and ModuleCacheBytes.
func (d *DiskFlags) Apply(wk *worker.Config) error {
	var err error
	if wk.LogBytesPerInstance, err = parseSizeFlag("instance-log-size", d.instanceLog, "1Mi"); err != nil {
		return err
	}
	if wk.LogBytesTotal, err = parseSizeFlag("log-budget", d.logBudget, "1Gi"); err != nil {
		return err
	}
	if wk.LogBytesTotal < 2*wk.LogBytesPerInstance {
		return clierr.Errorf("give --log-budget room for at least two instances' logs, or a smaller --instance-log-size",
			"--log-budget %s is less than twice --instance-log-size %s", d.logBudget, d.instanceLog)
	}
	if wk.DiskPressureFree, wk.DiskPressureFreePercent, err = parseMinFreeDisk(d.minFree); err != nil {
		return err
	}
	if strings.TrimSpace(d.moduleCache) == "0" {
		wk.ModuleCacheBytes = -1 // the worker's "no bound"
		return nil
	}
	wk.ModuleCacheBytes, err = parseSizeFlag("module-cache-size", d.moduleCache, "64Mi, or 0 for no bound")
	return err
}

func parseSizeFlag(name, s, example string) (int64, error) {
	n, err := ParseCapacity(s)
	if err != nil {
		return 0, clierr.Errorf(fmt.Sprintf("use --%s like %s, or a number of bytes", name, example), "invalid --%s: %v", name, err)
	}
	return n, nil
}

// parseMinFreeDisk reads --min-free-disk: "512Mi", "5%", "512Mi,5%" (the
// larger of the two), or "0" (never under pressure). A criterion not
// given is off (-1), as worker.Config reads it.
func parseMinFreeDisk(s string) (bytes int64, percent int, err error) {
	bad := func(format string, a ...any) error {
		return clierr.Errorf("use --min-free-disk like 512Mi, 5%, 512Mi,5% (the larger of the two), or 0 for never",
			"invalid --min-free-disk: "+format, a...)
	}
	bytes, percent = -1, -1
	if strings.TrimSpace(s) == "0" {
		return bytes, percent, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if p, ok := strings.CutSuffix(part, "%"); ok {
			n, perr := strconv.Atoi(strings.TrimSpace(p))
			if perr != nil || n <= 0 || n >= 100 || percent != -1 {
				return 0, 0, bad("%q is not one percentage from 1%% to 99%%", part)
			}
			percent = n
			continue
		}
		n, perr := ParseCapacity(part)
		if perr != nil || bytes != -1 {
			return 0, 0, bad("%q is not one size", part)
		}
		bytes = n
	}
	return bytes, percent, nil
}
