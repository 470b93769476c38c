package agentcmd

import (
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/wasmorch/wasmorch/worker"
)

func TestDiskFlagDefaultsAreTheWorkers(t *testing.T) {
	var d DiskFlags
	d.Add(pflag.NewFlagSet("t", pflag.ContinueOnError))
	var wk worker.Config
	if err := d.Apply(&wk); err != nil {
		t.Fatal(err)
	}
	if wk.LogBytesPerInstance != worker.DefaultLogBytesPerInstance || wk.LogBytesTotal != worker.DefaultLogBytesTotal ||
		wk.DiskPressureFree != worker.DefaultDiskPressureFree || wk.DiskPressureFreePercent != worker.DefaultDiskPressureFreePercent ||
		wk.ModuleCacheBytes != worker.DefaultModuleCacheBytes {
		t.Fatalf("the flags' defaults give %+v, want the worker's defaults", wk)
	}
}

func TestParseMinFreeDisk(t *testing.T) {
	for in, want := range map[string][2]int64{
		"512Mi,5%": {512 << 20, 5}, "5%": {-1, 5}, "2Gi": {2 << 30, -1}, " 10% , 1Gi ": {1 << 30, 10}, "0": {-1, -1},
	} {
		b, p, err := parseMinFreeDisk(in)
		if err != nil || b != want[0] || int64(p) != want[1] {
			t.Errorf("parseMinFreeDisk(%q) = %d, %d, %v; want %d, %d", in, b, p, err, want[0], want[1])
		}
	}
	for _, in := range []string{"", "lots", "5%,6%", "1Gi,2Gi", "100%", "0%", "-1Gi"} {
		_, _, err := parseMinFreeDisk(in)
		if err == nil || !strings.HasPrefix(err.Error(), "invalid --min-free-disk: ") {
			t.Errorf("parseMinFreeDisk(%q) = %v, want it refused", in, err)
		}
	}
}

func TestALogBudgetBelowTwoInstancesIsRefusedByItsFlags(t *testing.T) {
	d := DiskFlags{instanceLog: "1Gi", logBudget: "1Gi", minFree: "0"}
	err := d.Apply(&worker.Config{})
	if err == nil || !strings.HasPrefix(err.Error(), "--log-budget 1Gi is less than twice --instance-log-size 1Gi; ") {
		t.Fatalf("apply = %v, want the two flags named", err)
	}
}

func TestModuleCacheSizeFlag(t *testing.T) {
	for in, want := range map[string]int64{"64Mi": 64 << 20, "1Gi": 1 << 30, "0": -1} {
		d := DiskFlags{instanceLog: "1Mi", logBudget: "1Gi", minFree: "0", moduleCache: in}
		var wk worker.Config
		if err := d.Apply(&wk); err != nil || wk.ModuleCacheBytes != want {
			t.Errorf("--module-cache-size %s = %d, %v; want %d", in, wk.ModuleCacheBytes, err, want)
		}
	}
	d := DiskFlags{instanceLog: "1Mi", logBudget: "1Gi", minFree: "0", moduleCache: "lots"}
	if err := d.Apply(&worker.Config{}); err == nil || !strings.HasPrefix(err.Error(), "invalid --module-cache-size: ") {
		t.Fatalf("--module-cache-size lots = %v, want it refused", err)
	}
}
