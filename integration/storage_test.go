package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker"
)

// State (issue 14): an instance that floods its scratch space stops at its
// limit with ENOSPC and keeps running, its neighbour's writes within its
// own limit succeed, and a workload's scratch spaces go with it.
func TestScratchSpaceFloodStopsAtItsLimitWhileANeighbourRuns(t *testing.T) {
	var workerDir string
	a := start(t, options{worker: func(c *worker.Config) {
		c.MaxScratchBytes = 4 << 20
		workerDir = c.DataDir
	}})
	a.deploy(t, "flood", "scratch.wasm", &v1.WorkloadSpec{Replicas: 1, ScratchBytes: 1 << 20})
	a.deploy(t, "calm", "scratch.wasm", &v1.WorkloadSpec{Replicas: 1, ScratchBytes: 2 << 20, Args: []string{"1500000"}})
	a.waitFor(t, "both to have written", func() (bool, string) {
		flood, calm := joined(a.logs(t, "flood")), joined(a.logs(t, "calm"))
		return strings.Contains(flood, "wrote 1048576 bytes to /tmp/fill: No space left on device\nalive 1\n") &&
			strings.Contains(calm, "wrote 1500000 bytes to /tmp/fill\nalive 1\n"), flood + " | " + calm
	})
	a.waitInstances(t, "flood", 1, state(v1.InstanceState_INSTANCE_STATE_RUNNING))
	id := a.instances(t, "flood")[0].GetInstance().GetId()
	fill := filepath.Join(workerDir, "scratch", id, "fill")
	if info, err := os.Stat(fill); err != nil || info.Size() != 1<<20 {
		t.Fatalf("the flood's file on the node: %v, %v; want 1 MiB", info, err)
	}

	// Deleting the workload removes its scratch space.
	if _, err := a.control.DeleteWorkload(t.Context(), &v1.DeleteWorkloadRequest{Name: "flood"}); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, "the flood's scratch space to be removed", func() (bool, string) {
		_, err := os.Stat(filepath.Dir(fill))
		return os.IsNotExist(err), "still there"
	})
}

// A scratch space over what the node allows one instance is refused
// before anything is stored.
func TestScratchSpaceOverTheNodesAllowanceIsRefused(t *testing.T) {
	a := start(t, options{worker: func(c *worker.Config) { c.MaxScratchBytes = 4 << 20 }})
	err := a.tryDeploy("big", "scratch.wasm", &v1.WorkloadSpec{Replicas: 1, ScratchBytes: 8 << 20})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "scratch space of 8Mi is more than any node allows one instance (at most 4Mi") {
		t.Fatalf("deploy with 8Mi of scratch on a node allowing 4Mi: %v", err)
	}
	if _, err := a.control.GetWorkload(t.Context(), &v1.GetWorkloadRequest{Name: "big"}); !errdefs.IsNotFound(errdefs.FromGRPC(err)) {
		t.Fatalf("the refused workload was stored: %v", err)
	}
}

func joined(logs map[string]string) string {
	var b strings.Builder
	for _, l := range logs {
		b.WriteString(l)
	}
	return b.String()
}

// A named volume keeps what an instance wrote for the next one: a rollout
// restart replaces the instance and its successor counts on; it lives on
// the node its first instance was placed on, cannot be removed while a
// workload mounts it, and once removed, the name starts empty again.
func TestNamedVolumeOutlivesItsInstances(t *testing.T) {
	var workerDir string
	a := start(t, options{worker: func(c *worker.Config) {
		workerDir = c.DataDir
		c.VolumeGCInterval = 20 * time.Millisecond
	}})
	spec := func() *v1.WorkloadSpec {
		return &v1.WorkloadSpec{Replicas: 1, Volumes: []*v1.VolumeMount{{Name: "data", Path: "/data"}}}
	}
	a.deploy(t, "counter", "volcounter.wasm", spec())
	waitCount := func(n int) {
		a.waitFor(t, "count "+strconv.Itoa(n), func() (bool, string) {
			logs := joined(a.logs(t, "counter"))
			return strings.Contains(logs, "count "+strconv.Itoa(n)+"\n"), logs
		})
	}
	waitCount(1)
	vol, err := a.control.GetVolume(t.Context(), &v1.GetVolumeRequest{Name: "data"})
	if err != nil {
		t.Fatal(err)
	}
	if vol.GetVolume().GetNode() != "it-node" || !slices.Equal(vol.GetWorkloads(), []string{"counter"}) || vol.GetVolume().GetCreatedFor() != "counter" {
		t.Fatalf("volume: %v", vol)
	}
	count := filepath.Join(workerDir, "volumes", "data."+vol.GetVolume().GetUid(), "count")
	if b, err := os.ReadFile(count); err != nil || string(b) != "1\n" {
		t.Fatalf("the volume's file on the node: %q, %v", b, err)
	}

	first := a.instances(t, "counter")[0].GetInstance().GetId()
	if _, err := a.control.RestartRollout(t.Context(), &v1.RestartRolloutRequest{Workload: "counter"}); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, "the restarted instance to count on", func() (bool, string) {
		out := a.logs(t, "counter")
		for id, l := range out {
			if id != first && strings.Contains(l, "count 2\n") {
				return true, ""
			}
		}
		return false, fmt.Sprint(out)
	})

	_, err = a.control.DeleteVolume(t.Context(), &v1.DeleteVolumeRequest{Name: "data"})
	if err = errdefs.FromGRPC(err); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), `volume "data" is mounted by workload counter`) {
		t.Fatalf("removing a volume in use: %v", err)
	}
	if _, err := a.control.DeleteWorkload(t.Context(), &v1.DeleteWorkloadRequest{Name: "counter"}); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, "the counter's instances to go", func() (bool, string) {
		return len(a.instances(t, "counter")) == 0, describe(a.instances(t, "counter"))
	})
	if _, err := a.control.DeleteVolume(t.Context(), &v1.DeleteVolumeRequest{Name: "data"}); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, "the removed volume's directory to be deleted from its node", func() (bool, string) {
		_, err := os.Stat(filepath.Dir(count))
		return os.IsNotExist(err), fmt.Sprint(err)
	})
	a.deploy(t, "counter", "volcounter.wasm", spec())
	a.waitFor(t, "a new volume of the same name to start empty", func() (bool, string) {
		logs := joined(a.logs(t, "counter"))
		return strings.Contains(logs, "count 1\n") && !strings.Contains(logs, "count 3"), logs
	})
}

// Host mounts: a directory under one the node allows is mounted, read-only
// or writable; one elsewhere is refused before anything is stored, and a
// symbolic link out of the allowed directories fails the instance with the
// reason.
func TestHostMountsOnlyUnderWhatTheNodeAllows(t *testing.T) {
	allowed := t.TempDir()
	media := filepath.Join(allowed, "media")
	if err := os.MkdirAll(media, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(media, "hello"), []byte("hi"), 0o644); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(allowed, "link")); err != nil {
		t.Fatal(err)
	}
	a := start(t, options{worker: func(c *worker.Config) { c.AllowedMounts = []string{allowed} }})
	never := v1.RestartPolicy_RESTART_POLICY_NEVER
	a.deploy(t, "ro", "cat.wasm", &v1.WorkloadSpec{Replicas: 1, Restart: never, Args: []string{"/media/hello", "+/media/new"},
		Mounts: []*v1.HostMount{{HostPath: media, Path: "/media", ReadOnly: true}}})
	a.deploy(t, "rw", "cat.wasm", &v1.WorkloadSpec{Replicas: 1, Restart: never, Args: []string{"+/srv/new", "/srv/media/hello"},
		Mounts: []*v1.HostMount{{HostPath: allowed, Path: "/srv"}}})
	a.waitInstances(t, "ro", 1, state(v1.InstanceState_INSTANCE_STATE_SUCCEEDED))
	a.waitInstances(t, "rw", 1, state(v1.InstanceState_INSTANCE_STATE_SUCCEEDED))
	if got := joined(a.logs(t, "ro")); got != "/media/hello: hi\n/media/new: cannot write\n" {
		t.Errorf("read-only mount: %q", got)
	}
	if got := joined(a.logs(t, "rw")); got != "/srv/new: written\n/srv/media/hello: hi\n" {
		t.Errorf("writable mount: %q", got)
	}
	if _, err := os.Stat(filepath.Join(allowed, "new")); err != nil {
		t.Errorf("the file the guest wrote is not on the host: %v", err)
	}
	if _, err := os.Stat(filepath.Join(media, "new")); !os.IsNotExist(err) {
		t.Errorf("the read-only mount was written: %v", err)
	}

	err := a.tryDeploy("etc", "cat.wasm", &v1.WorkloadSpec{Replicas: 1, Restart: never, Mounts: []*v1.HostMount{{HostPath: "/etc", Path: "/etc"}}})
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "host path /etc is not allowed on any node: nodes allow "+allowed+" and what is below (agent|up --allow-mount)") {
		t.Fatalf("deploy mounting /etc: %v", err)
	}

	a.deploy(t, "escape", "cat.wasm", &v1.WorkloadSpec{Replicas: 1, Restart: never, Mounts: []*v1.HostMount{{HostPath: filepath.Join(allowed, "link"), Path: "/x"}}})
	a.waitFor(t, "the escaping mount to fail", func() (bool, string) {
		is := a.instances(t, "escape")
		return len(is) == 1 && is[0].GetState() == v1.InstanceState_INSTANCE_STATE_FAILED &&
			strings.Contains(is[0].GetStatus().GetMessage(), "host mount "+filepath.Join(allowed, "link")+": not under a directory node it-node allows"), describe(is)
	})
}

// Per-instance volumes: each replica of a counter keeps its own count in
// its replica slot's volume across a rollout restart; a scale-down keeps
// the volume of the slot it removes (in use no longer: `volume rm` takes
// it) and a scale-up makes a new one, while the slots in use cannot be
// removed.
func TestPerInstanceVolumesKeepEachReplicasCount(t *testing.T) {
	var workerDir string
	a := start(t, options{worker: func(c *worker.Config) {
		workerDir = c.DataDir
		c.VolumeGCInterval = 20 * time.Millisecond
	}})
	spec := &v1.WorkloadSpec{Replicas: 2, Volumes: []*v1.VolumeMount{{Name: "data", Path: "/data", PerInstance: true}}}
	a.deploy(t, "counter", "volcounter.wasm", spec)
	counts := func() (map[string]string, string) {
		got, why := map[string]string{}, ""
		for _, name := range []string{"data-counter-0", "data-counter-1"} {
			v, err := a.control.GetVolume(t.Context(), &v1.GetVolumeRequest{Name: name})
			if err != nil {
				why += fmt.Sprintf("%s: %v; ", name, err)
				continue
			}
			if !v.GetVolume().GetPerInstance() || v.GetVolume().GetWorkload() != "counter" || v.GetVolume().GetMount() != "data" || !slices.Equal(v.GetWorkloads(), []string{"counter"}) {
				why += fmt.Sprintf("%s: %v; ", name, v)
			}
			b, err := os.ReadFile(filepath.Join(workerDir, "volumes", name+"."+v.GetVolume().GetUid(), "count"))
			got[name] = string(b)
			why += fmt.Sprintf("%s: %q %v; ", name, b, err)
		}
		return got, why
	}
	waitCounts := func(want string) {
		a.waitFor(t, "each replica's count at "+want, func() (bool, string) {
			got, why := counts()
			return got["data-counter-0"] == want+"\n" && got["data-counter-1"] == want+"\n", why
		})
	}
	waitCounts("1")
	if _, err := a.control.RestartRollout(t.Context(), &v1.RestartRolloutRequest{Workload: "counter"}); err != nil {
		t.Fatal(err)
	}
	// A shared volume would have counted to 4; each replica counts on its own.
	waitCounts("2")
	a.waitInstances(t, "counter", 2, state(v1.InstanceState_INSTANCE_STATE_RUNNING))
	slots := map[int32]bool{}
	for _, iv := range a.instances(t, "counter") {
		slots[iv.GetInstance().GetOrdinal()] = true
	}
	if !slots[0] || !slots[1] {
		t.Fatalf("the instances after the rollout hold slots %v, want 0 and 1", slots)
	}

	_, err := a.control.DeleteVolume(t.Context(), &v1.DeleteVolumeRequest{Name: "data-counter-1"})
	if err = errdefs.FromGRPC(err); !errdefs.IsFailedPrecondition(err) ||
		!strings.Contains(err.Error(), `volume "data-counter-1" is the per-instance volume data of replica 1 of workload counter, which has 2 replicas; scale it to 1 or fewer`) {
		t.Fatalf("removing a replica's volume in use: %v", err)
	}
	if _, err := a.control.ScaleWorkload(t.Context(), &v1.ScaleRequest{Name: "counter", Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, "slot 1 to be scaled away", func() (bool, string) {
		insts := a.instances(t, "counter")
		return len(insts) == 1 && insts[0].GetInstance().GetOrdinal() == 0, describe(insts)
	})
	kept, err := a.control.GetVolume(t.Context(), &v1.GetVolumeRequest{Name: "data-counter-1"})
	if err != nil || len(kept.GetWorkloads()) != 0 {
		t.Fatalf("slot 1's volume after the scale-down: %v, %v; want it kept, used by none", kept, err)
	}
	// Scaled up again, slot 1 finds its count.
	if _, err := a.control.ScaleWorkload(t.Context(), &v1.ScaleRequest{Name: "counter", Replicas: 2}); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, "slot 1 to count on", func() (bool, string) {
		got, why := counts()
		return got["data-counter-1"] == "3\n", why
	})
	if _, err := a.control.ScaleWorkload(t.Context(), &v1.ScaleRequest{Name: "counter", Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, "slot 1's volume to be removable", func() (bool, string) {
		_, err := a.control.DeleteVolume(t.Context(), &v1.DeleteVolumeRequest{Name: "data-counter-1"})
		return err == nil, fmt.Sprint(err)
	})
	a.waitFor(t, "the removed volume's directory to be deleted from its node", func() (bool, string) {
		_, err := os.Stat(filepath.Join(workerDir, "volumes", "data-counter-1."+kept.GetVolume().GetUid()))
		return os.IsNotExist(err), fmt.Sprint(err)
	})
	// Scaled up once more, slot 1 has a new, empty volume.
	if _, err := a.control.ScaleWorkload(t.Context(), &v1.ScaleRequest{Name: "counter", Replicas: 2}); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, "slot 1 to start over in a new volume", func() (bool, string) {
		got, why := counts()
		return got["data-counter-1"] == "1\n" && got["data-counter-0"] == "2\n", why
	})
}
