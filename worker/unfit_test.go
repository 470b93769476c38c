package worker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// A module larger than the node's module cache is refused before it is
// fetched: the instance fails for good with ModuleTooLarge, marked unfit
// for the node (disk), and nothing is left on disk.
func TestModuleOverTheCacheIsRefusedAsUnfit(t *testing.T) {
	e := startEnv(t, envOptions{config: func(c *Config) { c.ModuleCacheBytes = 16 }})
	r := rec("a", pb.RestartPolicy_RESTART_POLICY_ALWAYS)
	r.Spec.ModuleSize = int64(len(testModule))
	e.cp.setDesired(r)
	eventually(t, "the instance refused", func() bool { return e.workerStatus("a").GetReason() == ReasonModuleTooLarge })
	st := e.workerStatus("a")
	if st.GetState() != pb.InstanceState_INSTANCE_STATE_FAILED || st.GetUnfit() != pb.NodeUnfit_NODE_UNFIT_DISK ||
		!strings.Contains(st.GetMessage(), "more than this node's module cache holds (16 bytes, agent --module-cache-size)") {
		t.Fatalf("status %v, want Failed, unfit disk, saying why", st)
	}
	if e.rt.Starts("a") != 0 {
		t.Fatal("an instance whose module the node cannot hold was started")
	}
	entries, _ := os.ReadDir(filepath.Join(e.w.cfg.DataDir, modulesDir))
	if len(entries) != 0 {
		t.Fatalf("module dir holds %d files", len(entries))
	}
}

// The modules of the node's instances are pinned while the instances are
// there: a module no instance uses any more is evicted once another needs
// the room, one in use never.
func TestModulesInUseAreNotEvicted(t *testing.T) {
	other := []byte("\x00asm\x01\x00\x00\x00 another fake module")
	reg := prometheus.NewRegistry()
	e := startEnv(t, envOptions{config: func(c *Config) { c.ModuleCacheBytes, c.Registry = int64(len(other))+4, reg }})
	e.cp.mu.Lock()
	e.cp.blobs[digestOf(other)] = other
	e.cp.mu.Unlock()
	a := rec("a", pb.RestartPolicy_RESTART_POLICY_ALWAYS)
	e.cp.setDesired(a)
	e.waitRunning("a")
	b := rec("b", pb.RestartPolicy_RESTART_POLICY_ALWAYS)
	b.Workload, b.Spec.ModuleDigest = "other", digestOf(other)
	e.cp.setDesired(a, b)
	e.waitRunning("b")
	path := func(d string) string { p, _ := e.w.modules.Path(d); return p }
	for _, d := range []string{testDigest, digestOf(other)} {
		if _, err := os.Stat(path(d)); err != nil {
			t.Fatalf("module %s of a running instance is gone: %v", d, err)
		}
	}
	// a leaves: its module is no longer in use, and over the bound it goes.
	e.cp.setDesired(b)
	eventually(t, "the unused module evicted", func() bool {
		_, err := os.Stat(path(testDigest))
		return os.IsNotExist(err)
	})
	if _, err := os.Stat(path(digestOf(other))); err != nil {
		t.Fatalf("the module in use was evicted: %v", err)
	}
	if u := e.w.modules.Usage(); u.Pinned != 1 || u.Evicted != 1 {
		t.Fatalf("cache usage %+v, want 1 pinned, 1 evicted", u)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	if got["wasmorch_worker_module_cache_bytes"] != float64(len(other)) || got["wasmorch_worker_module_cache_evictions_total"] != 1 {
		t.Fatalf("module cache metrics %v, want %d bytes and 1 eviction", got, len(other))
	}
}

func TestUnfitClasses(t *testing.T) {
	wasm := &instance{rec: rec("a", 0)}
	ctr := &instance{rec: &pb.Instance{Spec: &pb.WorkloadSpec{Kind: "container"}}}
	for _, c := range []struct {
		in   *instance
		exit runtimeapi.Exit
		want pb.NodeUnfit
	}{
		{wasm, runtimeapi.Exit{Reason: ReasonModuleTooLarge, Permanent: true}, pb.NodeUnfit_NODE_UNFIT_DISK},
		{wasm, runtimeapi.Exit{Reason: runtimeapi.ReasonInvalid, Permanent: true}, pb.NodeUnfit_NODE_UNFIT_ENGINE},
		{wasm, runtimeapi.Exit{Reason: runtimeapi.ReasonImportError, Permanent: true}, pb.NodeUnfit_NODE_UNFIT_ENGINE},
		{ctr, runtimeapi.Exit{Reason: runtimeapi.ReasonInvalid, Permanent: true}, pb.NodeUnfit_NODE_UNFIT_UNSPECIFIED}, // a bad image is bad everywhere
		{ctr, runtimeapi.Exit{Reason: runtimeapi.ReasonWrongArch, Permanent: true}, pb.NodeUnfit_NODE_UNFIT_ARCH},
		{wasm, runtimeapi.Exit{Reason: ReasonMemoryUnfit, Permanent: true}, pb.NodeUnfit_NODE_UNFIT_MEMORY},
		{wasm, runtimeapi.Exit{Reason: runtimeapi.ReasonTrap, Code: 134}, pb.NodeUnfit_NODE_UNFIT_UNSPECIFIED}, // a crash is the instance's
		{wasm, runtimeapi.Exit{Reason: runtimeapi.ReasonError, Code: 1}, pb.NodeUnfit_NODE_UNFIT_UNSPECIFIED},
		{wasm, runtimeapi.Exit{Reason: ReasonFetchError}, pb.NodeUnfit_NODE_UNFIT_UNSPECIFIED},
	} {
		if got := unfitOf(c.in, c.exit); got != c.want {
			t.Errorf("unfitOf(%s, %s) = %v, want %v", kindOf(c.in.rec.GetSpec()), c.exit.Reason, got, c.want)
		}
	}
}

// An instance reserving more than the node's whole allocatable memory
// would wait for memory for ever: it fails for good, unfit (memory).
func TestMemoryOverTheWholeNodeIsUnfit(t *testing.T) {
	e := startEnv(t, envOptions{config: func(c *Config) { c.MemoryBytes, c.ReservedMemoryBytes = 64<<20, -1 }})
	r := rec("a", pb.RestartPolicy_RESTART_POLICY_ALWAYS)
	r.Spec.MemoryBytes = 128 << 20
	e.cp.setDesired(r)
	eventually(t, "the instance refused", func() bool { return e.workerStatus("a").GetReason() == ReasonMemoryUnfit })
	st := e.workerStatus("a")
	if st.GetState() != pb.InstanceState_INSTANCE_STATE_FAILED || st.GetUnfit() != pb.NodeUnfit_NODE_UNFIT_MEMORY ||
		!strings.Contains(st.GetMessage(), "more than node node-a's whole allocatable memory (64 MiB)") {
		t.Fatalf("status %v", st)
	}
}
