package ctrrt_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"

	"github.com/wasmorch/wasmorch/ctrrt"
	"github.com/wasmorch/wasmorch/internal/ctrtest"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
	"github.com/wasmorch/wasmorch/worker/runtimeapi/rtconformance"
)

// fixture is a private containerd, a runtime on it, and the conformance
// program as an image archive.
type fixture struct {
	d        *ctrtest.Daemon
	rt       *ctrrt.Runtime
	artifact runtimeapi.Artifact
}

var (
	progOnce sync.Once
	progBin  string
	progDir  string
)

func newFixture(t testing.TB) *fixture {
	t.Helper()
	d := ctrtest.Start(t)
	rt := newRuntime(t, d)
	return &fixture{d: d, rt: rt, artifact: archiveArtifact(t, ctrtest.ImageArchive(t, program(t)))}
}

// program builds the conformance program once for the package's tests.
func program(t testing.TB) string {
	progOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ctrrt-prog-")
		if err != nil {
			t.Fatal(err)
		}
		progDir = dir
		progBin = rtconformance.BuildProgram(&dirTB{TB: t, dir: dir}, "linux", runtime.GOARCH)
	})
	if progBin == "" {
		t.Fatal("building the conformance program failed earlier")
	}
	return progBin
}

// dirTB hands BuildProgram a temp dir that outlives the first test.
type dirTB struct {
	testing.TB
	dir string
}

func (d *dirTB) TempDir() string { return d.dir }

func TestMain(m *testing.M) {
	code := m.Run()
	if progDir != "" {
		_ = os.RemoveAll(progDir)
	}
	os.Exit(code)
}

func newRuntime(t testing.TB, d *ctrtest.Daemon) *ctrrt.Runtime {
	t.Helper()
	cfg := ctrrt.DefaultConfig()
	cfg.Socket, cfg.Namespace = d.Socket, d.Namespace
	cfg.FIFODir = filepath.Join(d.Dir, "fifo")
	cfg.FilesDir = filepath.Join(d.Dir, "files")
	rt, err := ctrrt.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("ctrrt.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := rt.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return rt
}

func archiveArtifact(t testing.TB, path string) runtimeapi.Artifact {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return runtimeapi.Artifact{Digest: "sha256:" + hex.EncodeToString(sum[:]), Path: path}
}

func TestConformance(t *testing.T) {
	f := newFixture(t)
	rtconformance.Run(t, rtconformance.Harness{
		Runtime:            f.rt,
		Artifact:           f.artifact,
		MemoryLimitReasons: []string{runtimeapi.ReasonOOMKilled},
	})
}

func TestExitRemovesContainerAndSnapshot(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inst, err := f.rt.Start(ctx, runtimeapi.InstanceSpec{ID: "gone-1", Artifact: f.artifact, Args: []string{"sleep"}, MilliCPU: 250})
	if err != nil {
		t.Fatal(err)
	}
	c := f.d.Client(t, f.d.Namespace)
	ctr, err := c.LoadContainer(ctx, "gone-1")
	if err != nil {
		t.Fatalf("the running instance has no container: %v", err)
	}
	spec, err := ctr.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res := spec.Linux.Resources
	if res.Memory == nil || *res.Memory.Limit != 128<<20 {
		t.Errorf("memory limit = %+v, want the default 128 MiB", res.Memory)
	}
	if res.CPU == nil || *res.CPU.Quota != 25000 || *res.CPU.Period != 100000 {
		t.Errorf("CPU = %+v, want quota 25000 per 100000 (250 millicores)", res.CPU)
	}
	if got := inst.Stop(ctx, 5*time.Second); got.Reason != runtimeapi.ReasonStopped {
		t.Errorf("Stop = %+v", got)
	}
	ctrs, err := c.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ctrs) != 0 {
		t.Errorf("containers left after the instance exited: %d", len(ctrs))
	}
	var snaps []string
	err = c.SnapshotService("overlayfs").Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		if info.Kind == snapshots.KindActive {
			snaps = append(snaps, info.Name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 0 {
		t.Errorf("active snapshots left after the instance exited: %v", snaps)
	}
}

func TestStartReplacesLeftoverContainer(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	if err := f.rt.Prepare(ctx, f.artifact, 0); err != nil {
		t.Fatal(err)
	}
	// What a worker that died mid-run leaves: a container with a running
	// task and its snapshot, named after the instance.
	c := f.d.Client(t, f.d.Namespace)
	img, err := c.GetImage(ctx, "wasmorch.local/archive:"+strings.TrimPrefix(f.artifact.Digest, "sha256:"))
	if err != nil {
		t.Fatal(err)
	}
	ctr, err := c.NewContainer(ctx, "left-1", client.WithImage(img), client.WithNewSnapshot("left-1", img),
		client.WithNewSpec(oci.WithImageConfigArgs(img, []string{"sleep"})))
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.NewTask(ctx, cio.NullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	inst, err := f.rt.Start(ctx, runtimeapi.InstanceSpec{ID: "left-1", Artifact: f.artifact, Args: []string{"exit", "7"}})
	if err != nil {
		t.Fatalf("Start over a leftover container: %v", err)
	}
	<-inst.Done()
	if e := inst.Exit(); e.Code != 7 {
		t.Errorf("the new run exited %+v, want code 7", e)
	}
	if ctrs, _ := c.Containers(ctx); len(ctrs) != 0 {
		t.Errorf("containers left: %d", len(ctrs))
	}
}

func TestCorruptArchiveRefused(t *testing.T) {
	f := newFixture(t)
	bad := filepath.Join(t.TempDir(), "bad.tar")
	if err := os.WriteFile(bad, []byte(strings.Repeat("not a tar archive ", 100)), 0o644); err != nil {
		t.Fatal(err)
	}
	err := f.rt.Prepare(context.Background(), archiveArtifact(t, bad), 0)
	var se *runtimeapi.StartError
	if !errors.As(err, &se) || !strings.Contains(se.Exit.Message, "importing image archive") {
		t.Fatalf("Prepare(corrupt archive) = %v, want a StartError about importing", err)
	}
}

func TestPullUnreachableRegistry(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := f.rt.Prepare(ctx, runtimeapi.Artifact{Ref: "127.0.0.1:1/team/app:1.0"}, 0)
	var se *runtimeapi.StartError
	if !errors.As(err, &se) || se.Exit.Permanent || !strings.Contains(se.Exit.Message, "pulling image 127.0.0.1:1/team/app:1.0") {
		t.Fatalf("Prepare(unreachable ref) = %#v, want a retryable StartError naming the image", err)
	}
}

func TestNewWithoutContainerd(t *testing.T) {
	cfg := ctrrt.DefaultConfig()
	cfg.Socket = filepath.Join(t.TempDir(), "nothing.sock")
	_, err := ctrrt.New(context.Background(), cfg)
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), cfg.Socket) {
		t.Fatalf("New without containerd = %v, want Unavailable naming the socket", err)
	}
}

func TestCloseStopsInstances(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	rt := newRuntime(t, f.d)
	inst, err := rt.Start(ctx, runtimeapi.InstanceSpec{ID: "close-1", Artifact: f.artifact, Args: []string{"spin"}})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := rt.Close(cctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inst.Done():
	default:
		t.Fatal("Close returned while an instance runs")
	}
	c := f.d.Client(t, f.d.Namespace)
	if ctrs, _ := c.Containers(namespaces.WithNamespace(ctx, f.d.Namespace)); len(ctrs) != 0 {
		t.Errorf("containers left after Close: %d", len(ctrs))
	}
	if _, err := rt.Start(ctx, runtimeapi.InstanceSpec{ID: "close-2", Artifact: f.artifact}); err == nil {
		t.Error("Start after Close succeeded")
	}
}

// TestRestartedWorkerAdoptsAndRemoves plays a worker that died and came
// back: a second runtime on the same containerd adopts the still-running
// container of a wanted instance (same process, its output flowing to the
// new logs, no duplicate) and removes the container of an unwanted one.
func TestRestartedWorkerAdoptsAndRemoves(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	c := f.d.Client(t, f.d.Namespace)
	for _, id := range []string{"kept-1", "orphan-1"} {
		inst, err := f.rt.Start(ctx, runtimeapi.InstanceSpec{ID: id, Artifact: f.artifact, Args: []string{"tick"}, Restarts: 3})
		if err != nil {
			t.Fatal(err)
		}
		if n, adopted := inst.(runtimeapi.Readopted).Readopted(); adopted {
			t.Errorf("a started instance says it was adopted (restarts %d)", n)
		}
	}
	kept, err := c.LoadContainer(ctx, "kept-1")
	if err != nil {
		t.Fatal(err)
	}
	task, err := kept.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	pid := task.Pid()

	again := newRuntime(t, f.d)
	if err := again.RemoveUnwanted(ctx, map[string]bool{"kept-1": true}); err != nil {
		t.Fatalf("RemoveUnwanted: %v", err)
	}
	var out output
	inst, err := again.Start(ctx, runtimeapi.InstanceSpec{ID: "kept-1", Artifact: f.artifact, Args: []string{"tick"}, Stdout: &out})
	if err != nil {
		t.Fatalf("Start of a running instance: %v", err)
	}
	if n, adopted := inst.(runtimeapi.Readopted).Readopted(); !adopted || n != 3 {
		t.Errorf("adopted instance: Readopted() = %d, %v; want the restart count it was started with (3), true", n, adopted)
	}
	ctrs, err := c.Containers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ctrs) != 1 || ctrs[0].ID() != "kept-1" {
		t.Fatalf("containers after the restart: %d, want only kept-1", len(ctrs))
	}
	if task, err := ctrs[0].Task(ctx, nil); err != nil || task.Pid() != pid {
		t.Errorf("kept-1 runs as pid %d (err %v), want the adopted pid %d", task.Pid(), err, pid)
	}
	deadline := time.After(time.Minute)
	for !strings.Contains(out.String(), "tick") {
		select {
		case <-deadline:
			t.Fatal("the adopted container's output never reached the new writer")
		case <-time.After(20 * time.Millisecond):
		}
	}
	if e := inst.Stop(ctx, 5*time.Second); e.Reason != runtimeapi.ReasonStopped {
		t.Errorf("Stop of the adopted instance = %+v", e)
	}
}

type output struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// TestUsageReadsTheContainersCgroup: a spinning container's Usage (what
// `wasmorch top` shows) is its cgroup's counters: CPU time that grows
// while it spins, and the memory it holds.
func TestUsageReadsTheContainersCgroup(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	inst, err := f.rt.Start(ctx, runtimeapi.InstanceSpec{ID: "usage-1", Artifact: f.artifact, Args: []string{"spin"}, MilliCPU: 250})
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Stop(ctx, 5*time.Second)
	m, ok := inst.(runtimeapi.Measured)
	if !ok {
		t.Fatalf("a container instance (%T) does not say what it uses", inst)
	}
	first := m.Usage()
	var last runtimeapi.Usage
	for range 200 {
		if last = m.Usage(); last.CPU > first.CPU && last.MemoryBytes > 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("usage of a spinning container: first %+v, last %+v; want its CPU time growing and its memory above 0", first, last)
}
