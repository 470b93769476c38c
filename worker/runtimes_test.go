package worker

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/internal/fakert"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// TestContainerInstancesRunOnTheContainerRuntime: an instance of kind
// container goes to the runtime named "container", with its image
// reference (nothing fetched) or its uploaded archive (fetched and
// verified), its CPU limit, and the runtime's name in its status.
func TestContainerInstancesRunOnTheContainerRuntime(t *testing.T) {
	ctr := fakert.New("container")
	e := startEnv(t, envOptions{config: func(c *Config) { c.Runtimes = append(c.Runtimes, ctr) }})
	e.cp.mu.Lock()
	e.cp.blobs[testDigest] = testModule
	e.cp.mu.Unlock()

	pulled := rec("pulled-1", pb.RestartPolicy_RESTART_POLICY_ALWAYS)
	pulled.Spec = &pb.WorkloadSpec{Kind: "container", Image: "registry.example.com/team/api:1.4", CpuMillis: 500, MemoryBytes: 64 << 20}
	archived := rec("archived-1", pb.RestartPolicy_RESTART_POLICY_ALWAYS)
	archived.Spec = &pb.WorkloadSpec{Kind: "container", ModuleDigest: testDigest}
	wasm := rec("wasm-1", pb.RestartPolicy_RESTART_POLICY_ALWAYS)
	e.cp.setDesired(pulled, archived, wasm)

	e.waitRunning("wasm-1")
	for _, id := range []string{"pulled-1", "archived-1"} {
		eventually(t, id+" running on the container runtime", func() bool {
			st := e.workerStatus(id)
			return ctr.Latest(id) != nil && st.GetState() == pb.InstanceState_INSTANCE_STATE_RUNNING
		})
		if got := e.workerStatus(id).GetRuntime(); got != "container" {
			t.Errorf("%s status runtime = %q, want container", id, got)
		}
		if e.rt.Latest(id) != nil {
			t.Errorf("%s was started on the wasm runtime too", id)
		}
	}
	spec := ctr.Latest("pulled-1").Spec()
	if spec.Artifact != (runtimeapi.Artifact{Ref: "registry.example.com/team/api:1.4"}) || spec.MilliCPU != 500 || spec.MemoryBytes != 64<<20 {
		t.Errorf("pulled-1 started with %+v, want the image reference, 500 millicores and 64 MiB", spec)
	}
	if a := ctr.Latest("archived-1").Spec().Artifact; a.Digest != testDigest || a.Path == "" || a.Ref != "" {
		t.Errorf("archived-1 started with artifact %+v, want the fetched archive", a)
	}
	if got := e.workerStatus("wasm-1").GetRuntime(); got != "wasm" {
		t.Errorf("wasm-1 status runtime = %q, want wasm", got)
	}

	// Leaving the set releases the image reference like any artifact.
	e.cp.setDesired(archived, wasm)
	eventually(t, "pulled-1 stopped", func() bool { return ctr.Latest("pulled-1").Stopped() })
	// fakert counts releases by digest, and an image reference has none.
	eventually(t, "the image reference released", func() bool { return ctr.Released("") == 1 })
}

// flaky is a runtime that can stop answering, as containerd can.
type flaky struct {
	*fakert.Runtime
	up atomic.Bool
}

func (f *flaky) Serving(context.Context) bool { return f.up.Load() }

// TestNodeOffersOnlyRuntimesThatAnswer: when a runtime stops answering the
// node registers again without it, and with it once it is back.
func TestNodeOffersOnlyRuntimesThatAnswer(t *testing.T) {
	ctr := &flaky{Runtime: fakert.New("container")}
	ctr.up.Store(true)
	e := startEnv(t, envOptions{config: func(c *Config) { c.Runtimes = append(c.Runtimes, ctr) }})
	last := func() []string {
		regs := e.cp.registrations()
		if len(regs) == 0 {
			return nil
		}
		return regs[len(regs)-1].GetRuntimes()
	}
	eventually(t, "registered with both runtimes", func() bool { return slices.Equal(last(), []string{"wasm", "container"}) })
	ctr.up.Store(false)
	eventually(t, "registered again without the container runtime", func() bool { return slices.Equal(last(), []string{"wasm"}) })
	ctr.up.Store(true)
	eventually(t, "registered again with it", func() bool { return slices.Equal(last(), []string{"wasm", "container"}) })
}

// TestRuntimeNotAnsweringAtStartIsNotOffered: a runtime that does not
// answer when the worker starts (containerd not running yet) is left out
// of the very first registration, and offered once it answers.
func TestRuntimeNotAnsweringAtStartIsNotOffered(t *testing.T) {
	ctr := &flaky{Runtime: fakert.New("container")}
	e := startEnv(t, envOptions{config: func(c *Config) { c.Runtimes = append(c.Runtimes, ctr) }})
	eventually(t, "registered", func() bool { return len(e.cp.registrations()) > 0 })
	if first := e.cp.registrations()[0].GetRuntimes(); !slices.Equal(first, []string{"wasm"}) {
		t.Fatalf("first registration offers %v, want only wasm", first)
	}
	ctr.up.Store(true)
	eventually(t, "registered again with the container runtime", func() bool {
		regs := e.cp.registrations()
		return slices.Equal(regs[len(regs)-1].GetRuntimes(), []string{"wasm", "container"})
	})
}
