package ctrrt

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// cpuPeriod is the CFS period CPU limits are expressed in (100 ms).
const cpuPeriod = 100000

// instance is one container and its task.
type instance struct {
	id     string
	r      *Runtime
	ctr    client.Container
	task   client.Task
	onExit func(runtimeapi.Exit)
	done   chan struct{}
	exit   runtimeapi.Exit // written before done is closed

	mu       sync.Mutex
	stopping string // why the worker stopped it; "" while it was not

	adopted  bool  // taken over from a previous worker process
	restarts int32 // the restart count it was created with
}

var _ runtimeapi.Readopted = (*instance)(nil)

// Readopted implements runtimeapi.Readopted.
func (i *instance) Readopted() (int32, bool) { return i.restarts, i.adopted }

func (i *instance) ID() string            { return i.id }
func (i *instance) Done() <-chan struct{} { return i.done }

// Exit reports how the instance ended, or the zero Exit while it runs.
func (i *instance) Exit() runtimeapi.Exit {
	select {
	case <-i.done:
		return i.exit
	default:
		return runtimeapi.Exit{}
	}
}

// Start implements runtimeapi.Runtime: it prepares the image, creates the
// container (replacing one left with the same ID), starts its task and
// returns once the process runs. Errors are *runtimeapi.StartError; on error
// nothing is left behind.
func (r *Runtime) Start(ctx context.Context, spec runtimeapi.InstanceSpec) (_ runtimeapi.Instance, err error) {
	if err := checkSpec(spec); err != nil {
		return nil, err
	}
	img, err := r.image(ctx, spec.Artifact)
	if err != nil {
		return nil, err
	}
	ctx = r.ns(ctx)
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, startError(false, runtimeapi.ReasonStartError, "the container runtime is closed")
	}
	if _, dup := r.instances[spec.ID]; dup {
		r.mu.Unlock()
		return nil, startError(false, runtimeapi.ReasonStartError, fmt.Sprintf("instance %s is already running", spec.ID))
	}
	in := &instance{id: spec.ID, r: r, onExit: spec.OnExit, done: make(chan struct{})}
	r.instances[spec.ID] = in
	r.running.Add(1)
	r.mu.Unlock()
	defer func() {
		if err != nil {
			r.mu.Lock()
			delete(r.instances, spec.ID)
			r.mu.Unlock()
			r.running.Done()
		}
	}()

	mem := spec.MemoryBytes
	if mem == 0 {
		mem = r.cfg.DefaultMemoryBytes
	}
	stdout, stderr := orDiscard(spec.Stdout), orDiscard(spec.Stderr)
	if exitCh, ok := r.adopt(ctx, in, spec, stdout, stderr); ok {
		r.log.Info("container adopted", "instance", spec.ID, "pid", in.task.Pid())
		go in.wait(exitCh, mem)
		return in, nil
	}
	if err := r.remove(ctx, spec.ID); err != nil {
		return nil, startError(false, runtimeapi.ReasonStartError, fmt.Sprintf("removing the previous container %s: %v", spec.ID, err))
	}
	specOpts := []oci.SpecOpts{oci.WithImageConfig(img)}
	if len(spec.Args) > 0 {
		// Args replace the image's CMD and follow its ENTRYPOINT, as with
		// `docker run IMAGE ARG...`.
		specOpts = []oci.SpecOpts{oci.WithImageConfigArgs(img, spec.Args)}
	}
	specOpts = append(specOpts, oci.WithEnv(spec.Env), oci.WithMemoryLimit(uint64(mem)))
	if len(spec.Files) > 0 {
		mounts, ferr := r.writeFiles(spec.ID, spec.Files)
		if ferr != nil {
			return nil, startError(false, runtimeapi.ReasonStartError, ferr.Error())
		}
		defer func() {
			if err != nil {
				r.removeFiles(spec.ID) // Don't leak the files on error.
			}
		}()
		specOpts = append(specOpts, oci.WithMounts(mounts))
	}
	if len(spec.Mounts) > 0 {
		mounts, merr := mountsOf(spec.Mounts) // mounts.go
		if merr != nil {
			return nil, startError(true, runtimeapi.ReasonStartError, merr.Error())
		}
		specOpts = append(specOpts, oci.WithMounts(mounts))
	}
	if spec.MilliCPU > 0 {
		specOpts = append(specOpts, oci.WithCPUCFS(spec.MilliCPU*cpuPeriod/1000, cpuPeriod))
	}
	ctr, err := r.client.NewContainer(ctx, spec.ID,
		client.WithImage(img),
		client.WithSnapshotter(r.cfg.Snapshotter),
		client.WithNewSnapshot(spec.ID, img),
		client.WithRuntime(r.cfg.Shim, nil),
		client.WithNewSpec(specOpts...),
		client.WithContainerLabels(map[string]string{
			LabelInstance: spec.ID, LabelArtifact: artifactKey(spec.Artifact), LabelRestarts: strconv.Itoa(int(spec.Restarts)),
		}),
	)
	if err != nil {
		return nil, startError(false, runtimeapi.ReasonStartError, fmt.Sprintf("creating container %s: %v", spec.ID, err))
	}
	in.ctr = ctr
	defer func() {
		if err != nil {
			cctx, cancel := context.WithTimeout(r.base, cleanupTimeout)
			_ = ctr.Delete(cctx, client.WithSnapshotCleanup) // Don't leak the container on error.
			cancel()
		}
	}()
	task, err := ctr.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, stdout, stderr), cio.WithFIFODir(r.cfg.FIFODir)))
	if err != nil {
		return nil, startError(false, runtimeapi.ReasonStartError, fmt.Sprintf("creating the task of container %s: %v", spec.ID, firstLine(err)))
	}
	in.task = task
	if why := r.foreignEntrypoint(ctx, ctr, task.Pid()); why != "" { // edge: entryarch.go
		dctx, cancel := context.WithTimeout(r.base, cleanupTimeout)
		_, _ = task.Delete(dctx, client.WithProcessKill)
		cancel()
		err = startError(true, runtimeapi.ReasonWrongArch, fmt.Sprintf("container %s: %s", spec.ID, why))
		return nil, err
	}
	// Waiting under the runtime's own context: the exit must be seen
	// whatever becomes of the caller's ctx.
	exitCh, err := task.Wait(r.base)
	if err == nil {
		err = task.Start(ctx)
	}
	if err != nil {
		dctx, cancel := context.WithTimeout(r.base, cleanupTimeout)
		_, _ = task.Delete(dctx, client.WithProcessKill)
		cancel()
		return nil, startError(false, runtimeapi.ReasonStartError, fmt.Sprintf("starting container %s: %v", spec.ID, firstLine(err)))
	}
	r.log.Debug("container started", "instance", spec.ID, "pid", task.Pid())
	go in.wait(exitCh, mem)
	return in, nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// adopt takes over a running container of this instance that a previous
// worker process started (instance IDs are per generation, so the same ID
// means the same spec): it attaches to its output pipes and waits for its
// exit, rather than start a duplicate. It reports false when there is
// nothing to adopt; Start then replaces whatever is there.
func (r *Runtime) adopt(ctx context.Context, in *instance, spec runtimeapi.InstanceSpec, stdout, stderr io.Writer) (<-chan client.ExitStatus, bool) {
	ctr, err := r.client.LoadContainer(ctx, spec.ID)
	if err != nil {
		return nil, false
	}
	labels, err := ctr.Labels(ctx)
	if err != nil || labels[LabelInstance] != spec.ID || labels[LabelArtifact] != artifactKey(spec.Artifact) {
		return nil, false
	}
	task, err := ctr.Task(ctx, cio.NewAttach(cio.WithStreams(nil, stdout, stderr)))
	if err != nil {
		return nil, false
	}
	if st, err := task.Status(ctx); err != nil || st.Status != client.Running {
		return nil, false
	}
	exitCh, err := task.Wait(r.base)
	if err != nil {
		return nil, false
	}
	in.ctr, in.task, in.adopted = ctr, task, true
	if n, err := strconv.ParseInt(labels[LabelRestarts], 10, 32); err == nil {
		in.restarts = int32(n)
	}
	return exitCh, true
}

// RemoveUnwanted implements runtimeapi.Adopter: it removes every container
// this runtime's namespace holds for an instance not in keep, with its task
// and snapshot: what a worker that died left of instances that are no
// longer wanted.
func (r *Runtime) RemoveUnwanted(ctx context.Context, keep map[string]bool) error {
	ctx = r.ns(ctx)
	ctrs, err := r.client.Containers(ctx, fmt.Sprintf("labels.%q", LabelInstance))
	if err != nil {
		return fmt.Errorf("listing containers: %w", err)
	}
	var errs []error
	for _, ctr := range ctrs {
		id := ctr.ID()
		r.mu.Lock()
		_, ours := r.instances[id]
		r.mu.Unlock()
		if keep[id] || ours {
			continue
		}
		r.log.Info("removing the container of an unwanted instance", "instance", id)
		if err := r.remove(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("container %s: %w", id, err))
		}
	}
	if err := r.removeUnwantedFiles(keep); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// remove deletes a container named id and its task and snapshot, if there
// is one: what a worker that died mid-run left behind.
func (r *Runtime) remove(ctx context.Context, id string) error {
	ctr, err := r.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		// A snapshot, or files, may outlive a container whose removal was
		// cut short.
		if err := r.client.SnapshotService(r.cfg.Snapshotter).Remove(ctx, id); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		r.removeFiles(id)
		return nil
	} else if err != nil {
		return err
	}
	if task, err := ctr.Task(ctx, nil); err == nil {
		if _, err := task.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			// Someone else (a worker process still waiting for it) may have
			// deleted it meanwhile, its shim closing the connection under
			// this call: that is as good as done.
			if _, terr := ctr.Task(ctx, nil); !errdefs.IsNotFound(terr) {
				return err
			}
		}
	}
	if err := ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		return err
	}
	r.removeFiles(id)
	return nil
}

// wait is the instance's goroutine: it waits for the task to exit, reads
// whether the OOM killer ended it, removes task, container and snapshot,
// and finishes the instance.
func (i *instance) wait(exitCh <-chan client.ExitStatus, mem int64) {
	st := <-exitCh
	exit := runtimeapi.Exit{Code: int32(st.ExitCode())}
	oom := i.r.oomKilled(i.id)
	i.mu.Lock()
	stopping := i.stopping
	i.mu.Unlock()
	switch {
	case st.Error() != nil:
		exit = runtimeapi.Exit{Code: NotStartedExitCode, Reason: runtimeapi.ReasonError, Message: "lost track of the container: " + st.Error().Error()}
	case stopping != "":
		exit.Reason, exit.Message = runtimeapi.ReasonStopped, stopping
	case oom:
		exit.Reason = runtimeapi.ReasonOOMKilled
		exit.Message = fmt.Sprintf("killed by the OOM killer at its memory limit of %d bytes (exit code %d)", mem, exit.Code)
	case exit.Code == 0:
		exit.Reason = runtimeapi.ReasonCompleted
	default:
		exit.Reason = runtimeapi.ReasonError
		exit.Message = fmt.Sprintf("exited with code %d", exit.Code)
		if exit.Code > 128 && exit.Code < 128+65 {
			exit.Message += " (" + syscall.Signal(exit.Code-128).String() + ")"
		}
	}

	// Deleting the task waits until its output has been copied to the logs.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(i.r.base), cleanupTimeout)
	if _, err := i.task.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		_, _ = i.task.Delete(ctx, client.WithProcessKill)
		i.r.log.Warn("deleting task", "instance", i.id, "err", err)
	}
	if err := i.ctr.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		i.r.log.Warn("deleting container", "instance", i.id, "err", err)
	}
	cancel()
	i.r.removeFiles(i.id)

	exit.At = st.ExitTime()
	if exit.At.IsZero() {
		exit.At = time.Now()
	}
	i.r.mu.Lock()
	if i.r.instances[i.id] == i {
		delete(i.r.instances, i.id)
	}
	i.r.mu.Unlock()
	defer i.r.running.Done()
	i.exit = exit
	if i.onExit != nil {
		i.onExit(exit)
	}
	close(i.done)
}

// Stop implements runtimeapi.Instance: SIGTERM, then SIGKILL once grace
// has passed (or at once when grace is zero), then it waits for the exit
// and the container's removal. If ctx ends first it returns a Stopped exit
// that says the instance had not exited yet; Done still tells when it does.
func (i *instance) Stop(ctx context.Context, grace time.Duration) runtimeapi.Exit {
	i.mu.Lock()
	first := i.stopping == ""
	if first {
		i.stopping = "stopped by the worker"
	}
	i.mu.Unlock()
	kctx := i.r.ns(context.WithoutCancel(ctx))
	if first && grace > 0 {
		if err := i.task.Kill(kctx, syscall.SIGTERM); err == nil {
			t := time.NewTimer(grace)
			defer t.Stop()
			select {
			case <-i.done:
				return i.exit
			case <-t.C:
			case <-ctx.Done():
			}
		}
	}
	select {
	case <-i.done:
		return i.exit
	default:
	}
	i.mu.Lock()
	if grace > 0 {
		i.stopping = fmt.Sprintf("stopped by the worker: killed after a grace period of %s", grace)
	}
	i.mu.Unlock()
	_ = i.task.Kill(kctx, syscall.SIGKILL, client.WithKillAll) // Fails only if it has exited.
	select {
	case <-i.done:
		return i.exit
	case <-ctx.Done():
		return runtimeapi.Exit{
			Code:    128 + int32(syscall.SIGKILL),
			Reason:  runtimeapi.ReasonStopped,
			Message: fmt.Sprintf("stop requested, but container %s had not exited yet: %v", i.id, context.Cause(ctx)),
			At:      time.Now(),
		}
	}
}

// oomKilled reports whether the kernel's OOM killer killed a process of
// the container's cgroup (read before the task is deleted, which removes
// the cgroup): memory.oom_control on cgroup v1, memory.events on v2.
func (r *Runtime) oomKilled(id string) bool {
	path := filepath.Join("/", r.cfg.Namespace, id) // containerd's default cgroups path
	for _, f := range []string{
		filepath.Join(r.cfg.CgroupRoot, "memory", path, "memory.oom_control"),
		filepath.Join(r.cfg.CgroupRoot, path, "memory.events"),
	} {
		if n, ok := readCounter(f, "oom_kill"); ok {
			return n > 0
		}
	}
	return false
}

// readCounter reads the "name N" line of a cgroup key-value file.
func readCounter(path, name string) (int64, bool) {
	f, err := os.Open(path)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if ok && k == name {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n, err == nil
		}
	}
	return 0, false
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

var _ runtimeapi.Measured = (*instance)(nil)

// Usage reads the container's cgroup (observe): cgroup v2's cpu.stat and
// memory.current, or v1's cpuacct.usage and memory.usage_in_bytes.
func (i *instance) Usage() runtimeapi.Usage {
	path := filepath.Join("/", i.r.cfg.Namespace, i.id) // containerd's default cgroups path
	root := i.r.cfg.CgroupRoot
	var u runtimeapi.Usage
	if usec, ok := readCounter(filepath.Join(root, path, "cpu.stat"), "usage_usec"); ok {
		u.CPU = time.Duration(usec) * time.Microsecond
		u.MemoryBytes = readNumber(filepath.Join(root, path, "memory.current"))
		return u
	}
	u.CPU = time.Duration(readNumber(filepath.Join(root, "cpuacct", path, "cpuacct.usage")))
	u.MemoryBytes = readNumber(filepath.Join(root, "memory", path, "memory.usage_in_bytes"))
	return u
}

// readNumber reads a cgroup file holding one number; 0 if it cannot.
func readNumber(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}
