package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/logstore"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// Reasons the worker itself records (the runtime's are in runtimeapi).
const (
	ReasonNoRuntime   = "NoRuntime"   // no runtime on this node runs the spec's kind
	ReasonFetchError  = "FetchError"  // the module could not be fetched or verified
	ReasonInvalidSpec = "InvalidSpec" // the instance record cannot be run as written
)

const (
	defaultKind       = "wasm"
	stopSlack         = 2 * time.Second // beyond the grace, for the runtime to force an exit
	fetchTimeout      = 2 * time.Minute
	defaultBackoff    = 100 * time.Millisecond
	defaultBackoffMax = 30 * time.Second
	defaultResetAfter = 10 * time.Second
)

// instance supervises one assigned instance: it starts it through its
// runtime, restarts it per policy with backoff (a timer, never a sleeping
// goroutine) and stops it when it is no longer wanted. Its steps run on the
// worker's start and stop queues; the guest's goroutine belongs to the
// runtime.
type instance struct {
	rec *pb.Instance // desired record; never modified
	log *logstore.Log
	rt  runtimeapi.Runtime // nil: no runtime for the spec's kind

	mu          sync.Mutex
	status      *pb.InstanceStatus // latest; replaced, never modified
	run         runtimeapi.Instance
	gen         uint32 // counts start attempts; OnExit of an older one is ignored
	timer       timer  // pending restart
	startedAt   time.Time
	restarts    int32
	failures    int // consecutive restarts, for backoff
	everStarted bool
	early       *runtimeapi.Exit // exited before Start returned

	queued      bool // on the start queue
	busy        bool // a start step is in progress
	memoryRetry bool // memory came back while a start step was refused it (memory.go)
	stopping    bool // no longer wanted
	stopQueued  bool // on the stop queue
	final       bool // stopped for good; nothing runs again
	done        bool // exited, and its restart policy does not run it again (persist.go)

	memory int64 // reserved from the node's memory budget; guarded by Worker.memMu
}

func (in *instance) id() string { return in.rec.GetId() }

// enqueueStart puts in on the start queue unless it is stopping, running,
// or already queued.
func (w *Worker) enqueueStart(in *instance) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.timer = nil
	w.enqueueStartLocked(in)
}

func (w *Worker) enqueueStartLocked(in *instance) {
	if in.queued || in.busy || in.stopping || in.final || in.done || in.run != nil {
		return
	}
	in.queued = true
	w.startq.push(in)
}

// requestStop marks in as unwanted and queues its stop.
func (w *Worker) requestStop(in *instance) {
	in.mu.Lock()
	if in.stopping {
		in.mu.Unlock()
		return
	}
	in.stopping = true
	if in.timer != nil {
		in.timer.Stop()
		in.timer = nil
	}
	in.mu.Unlock()
	w.enqueueStop(in)
}

func (w *Worker) enqueueStop(in *instance) {
	in.mu.Lock()
	if in.stopQueued || in.final {
		in.mu.Unlock()
		return
	}
	in.stopQueued = true
	in.mu.Unlock()
	w.stopq.push(in)
}

// doStart runs one start attempt: fetch the module, prepare, start.
func (w *Worker) doStart(ctx context.Context, in *instance) {
	in.mu.Lock()
	in.queued = false
	if in.busy || in.stopping || in.final || in.run != nil {
		in.mu.Unlock()
		return
	}
	in.busy = true
	in.mu.Unlock()
	if !w.admitMemory(in) {
		return
	}

	in.mu.Lock()
	in.gen++
	gen := in.gen
	if gen == 1 {
		w.setStatusLocked(in, w.newStatus(in, pb.InstanceState_INSTANCE_STATE_STARTING, "", "preparing the module"))
	}
	in.mu.Unlock()

	began := time.Now()
	run, startedAt, failure, retry := w.launch(ctx, in, gen)

	in.mu.Lock()
	in.busy = false
	if ctx.Err() != nil || w.closing.Load() {
		// Shutting down: the shutdown path stops whatever runs.
		if run != nil && in.early == nil {
			in.run = run
		}
		in.mu.Unlock()
		return
	}
	switch {
	case run != nil:
		w.metrics.started(time.Since(began))
		if n, adopted := readopted(run); adopted && gen == 1 {
			in.restarts = n // Carry on counting where a previous worker process stopped.
		} else if in.everStarted {
			w.metrics.restarted(in.rec.GetWorkload())
			in.restarts++
		}
		in.everStarted = true
		w.persistSoon()
		in.startedAt = startedAt
		if in.early != nil {
			exit := *in.early
			in.early = nil
			w.exitedLocked(in, exit)
		} else {
			in.run = run
			if !in.stopping {
				st := w.newStatus(in, pb.InstanceState_INSTANCE_STATE_RUNNING, "", "")
				if svc, ok := run.(*wasmService); ok {
					// Ready once its guest accepts (wasmsvc.go).
					st = w.newStatus(in, pb.InstanceState_INSTANCE_STATE_STARTING, "", svc.waiting())
					go w.awaitAccepting(ctx, in, gen, svc)
				} else if p, set, ok := healthSettings(run, in.rec.GetSpec()); ok {
					// Ready once a health check passes (health.go).
					st = w.newStatus(in, pb.InstanceState_INSTANCE_STATE_STARTING, "", "waiting for a health check (GET "+set.HealthPath+") to pass")
					go w.checkHealth(ctx, in, gen, p, run.Done(), set)
				}
				st.StartedUnixNano = startedAt.UnixNano()
				w.setStatusLocked(in, st)
			}
		}
	case !in.stopping:
		w.startFailedLocked(in, failure, retry)
	}
	stopping := in.stopping
	in.mu.Unlock()
	if stopping {
		w.enqueueStop(in)
	}
}

// launch fetches, prepares and starts one run. On failure it returns the
// Exit to record, and whether to retry regardless of the restart policy.
func (w *Worker) launch(ctx context.Context, in *instance, gen uint32) (runtimeapi.Instance, time.Time, runtimeapi.Exit, bool) {
	spec := in.rec.GetSpec()
	if spec == nil {
		return nil, time.Time{}, runtimeapi.Exit{Reason: ReasonInvalidSpec, Message: "the instance record has no spec", Permanent: true}, false
	}
	if in.rt == nil {
		msg := fmt.Sprintf("no runtime for kind %q on node %s (it offers %v)", kindOf(spec), w.cfg.NodeName, w.runtimeNames())
		return nil, time.Time{}, runtimeapi.Exit{Reason: ReasonNoRuntime, Message: msg, Permanent: true}, false
	}
	art, failure, retry := w.fetchArtifact(ctx, spec)
	if failure != nil {
		return nil, time.Time{}, *failure, retry
	}
	if err := in.rt.Prepare(ctx, art, spec.GetMemoryBytes()); err != nil {
		return nil, time.Time{}, startExit(err), false
	}
	mounts, failure := w.instanceMounts(in, spec) // storage.go
	if failure != nil {
		return nil, time.Time{}, *failure, false
	}
	in.mu.Lock()
	restarts := in.restarts
	if in.everStarted {
		restarts++
	}
	in.mu.Unlock()
	rs := runtimeapi.InstanceSpec{
		ID:          in.id(),
		Artifact:    art,
		Args:        spec.GetArgs(),
		Env:         envList(spec.GetEnv()),
		MemoryBytes: spec.GetMemoryBytes(),
		MilliCPU:    spec.GetCpuMillis(),
		Stdout:      in.log,
		Stderr:      in.log,
		OnExit:      func(e runtimeapi.Exit) { w.onExit(in, gen, e) },
		Restarts:    restarts,
		Files:       filesOf(spec.GetFiles()), // configs
		Mounts:      mounts,
	}
	if isWasmService(spec) {
		return w.startWasmService(ctx, in, rs, spec) // wasmsvc.go
	}
	if spec.GetHttp() != nil && kindOf(spec) == kindContainer {
		return w.startContainerFunction(ctx, in, rs, spec)
	}
	if spec.GetHttp() != nil {
		return w.startFunction(ctx, in, art, spec)
	}
	startedAt := w.clock.Now()
	run, err := in.rt.Start(ctx, rs)
	if err != nil {
		return nil, time.Time{}, startExit(err), false
	}
	return run, startedAt, runtimeapi.Exit{}, false
}

// readopted says whether run is an instance a previous worker process
// left running, which the runtime took back, and its restart count then.
func readopted(run runtimeapi.Instance) (int32, bool) {
	if a, ok := run.(runtimeapi.Readopted); ok {
		return a.Readopted()
	}
	return 0, false
}

func startExit(err error) runtimeapi.Exit {
	var se *runtimeapi.StartError
	if errors.As(err, &se) {
		e := se.Exit
		if e.Reason == "" {
			e.Reason = runtimeapi.ReasonStartError
		}
		return e
	}
	return runtimeapi.Exit{Reason: runtimeapi.ReasonStartError, Message: err.Error()}
}

// onExit is the runtime's OnExit for start attempt gen.
func (w *Worker) onExit(in *instance, gen uint32, e runtimeapi.Exit) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if gen != in.gen || in.final {
		return
	}
	if in.busy {
		in.early = &e // doStart finishes the bookkeeping.
		return
	}
	in.run = nil
	w.exitedLocked(in, e)
}

// exitedLocked records a run's exit and restarts per policy.
func (w *Worker) exitedLocked(in *instance, e runtimeapi.Exit) {
	if in.stopping || w.closing.Load() {
		return // Being stopped: not a failure, and never restarted.
	}
	now := w.clock.Now()
	succeeded := e.Code == 0 && (e.Reason == "" || e.Reason == runtimeapi.ReasonCompleted)
	state, reason := pb.InstanceState_INSTANCE_STATE_FAILED, e.Reason
	if succeeded {
		state, reason = pb.InstanceState_INSTANCE_STATE_SUCCEEDED, runtimeapi.ReasonCompleted
	} else if reason == "" {
		reason = runtimeapi.ReasonError
	}
	w.metrics.exited(in.rec.GetWorkload(), reason)
	st := w.newStatus(in, state, reason, e.Message)
	st.Unfit = unfitOf(in, e) // edge: unfit.go
	st.Exited = true
	st.ExitCode = e.Code
	st.StartedUnixNano = in.startedAt.UnixNano()
	st.FinishedUnixNano = now.UnixNano()
	if !e.At.IsZero() {
		st.FinishedUnixNano = e.At.UnixNano()
	}
	if e.Permanent || !restarts(in.rec.GetSpec().GetRestart(), succeeded) {
		in.done = true
		w.setStatusLocked(in, st)
		w.persistSoon()
		return
	}
	if now.Sub(in.startedAt) >= w.backoffReset {
		in.failures = 0
	}
	w.retryLocked(in, st)
}

// startFailedLocked records a start attempt that never ran.
func (w *Worker) startFailedLocked(in *instance, e runtimeapi.Exit, retryAlways bool) {
	st := w.newStatus(in, pb.InstanceState_INSTANCE_STATE_FAILED, e.Reason, e.Message)
	st.Unfit = unfitOf(in, e) // edge: unfit.go
	if e.Permanent || !(retryAlways || restarts(in.rec.GetSpec().GetRestart(), false)) {
		w.setStatusLocked(in, st)
		return
	}
	w.retryLocked(in, st)
}

// retryLocked reports st and schedules the next start after the backoff.
func (w *Worker) retryLocked(in *instance, st *pb.InstanceStatus) {
	d := backoff(in.failures, w.backoffBase, w.backoffMax)
	in.failures++
	note := "restarting in " + d.String()
	if d == 0 {
		note = "restarting now"
	}
	if st.Message != "" {
		st.Message += "; " + note
	} else {
		st.Message = note
	}
	w.setStatusLocked(in, st)
	if d <= 0 {
		w.enqueueStartLocked(in)
		return
	}
	in.timer = w.clock.AfterFunc(d, func() { w.enqueueStart(in) })
}

// retryFetchesNow starts at once the instances that wait to retry fetching
// their module, rather than leave them to their backoff.
func (w *Worker) retryFetchesNow() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, in := range w.instances {
		in.mu.Lock()
		if in.timer != nil && in.status.GetReason() == ReasonFetchError && in.timer.Stop() {
			in.timer = nil
			w.enqueueStartLocked(in)
		}
		in.mu.Unlock()
	}
}

// restarts applies a restart policy to an exit.
func restarts(p pb.RestartPolicy, succeeded bool) bool {
	switch p {
	case pb.RestartPolicy_RESTART_POLICY_NEVER:
		return false
	case pb.RestartPolicy_RESTART_POLICY_ON_FAILURE:
		return !succeeded
	default: // ALWAYS and UNSPECIFIED
		return true
	}
}

// doStop stops in for good, then forgets it.
func (w *Worker) doStop(ctx context.Context, in *instance) {
	in.mu.Lock()
	in.stopQueued = false
	if in.final || in.busy {
		in.mu.Unlock() // A busy start re-queues the stop when it ends.
		return
	}
	in.final = true
	run := in.run
	in.run = nil
	in.mu.Unlock()
	if run != nil {
		// Bounded by the grace, not by ctx: a shutdown must not cut a stop
		// that has begun short of its grace period.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.stopGrace+stopSlack)
		run.Stop(sctx, w.stopGrace)
		cancel()
	}
	w.forget(in)
}

// forget drops a stopped instance: its logs, its artifact reference, its
// place in the map; then it reports the final STOPPED status and lets the
// reconciler run again, in case the instance was re-assigned meanwhile.
func (w *Worker) forget(in *instance) {
	if err := w.logs.Remove(in.id()); err != nil {
		w.logger.Warn("removing instance logs", "instance", in.id(), "err", err)
	}
	w.removeScratch(in.id()) // storage.go
	w.mu.Lock()
	if w.instances[in.id()] == in {
		delete(w.instances, in.id())
	}
	if w.local != nil {
		w.local.remove(in.rec) // localhttp.go
	}
	w.unrefLocked(in)
	w.mu.Unlock()
	w.releaseMemory(in)

	in.mu.Lock()
	st := w.newStatus(in, pb.InstanceState_INSTANCE_STATE_STOPPED, runtimeapi.ReasonStopped, "no longer assigned to this node")
	in.status = st
	in.mu.Unlock()
	w.statuses.add(st)
	w.desired.touch(in.id())
	w.kickReconcile()
}

// terminating says whether the control plane marked an instance of the
// set terminating: its node stops it and reports it Stopped, after which
// the record goes.
func terminating(rec *pb.Instance) bool { return rec.GetTerminatingUnixNano() != 0 }

// reportAbsent reports Stopped the terminating instances the worker does
// not run: nothing of them is left here, and the control plane waits for
// that word to let them go.
func (w *Worker) reportAbsent(recs []*pb.Instance) {
	if len(recs) == 0 {
		return
	}
	sts := make([]*pb.InstanceStatus, len(recs))
	now := w.clock.Now().UnixNano()
	for i, rec := range recs {
		sts[i] = &pb.InstanceStatus{
			Id:              rec.GetId(),
			Node:            w.cfg.NodeName,
			State:           pb.InstanceState_INSTANCE_STATE_STOPPED,
			Reason:          runtimeapi.ReasonStopped,
			Message:         "not running on this node",
			UpdatedUnixNano: now,
		}
	}
	w.statuses.addAll(sts)
}

// newStatus starts a status record for in; the caller holds in.mu.
func (w *Worker) newStatus(in *instance, state pb.InstanceState, reason, message string) *pb.InstanceStatus {
	return &pb.InstanceStatus{
		Id:              in.id(),
		Node:            w.cfg.NodeName,
		State:           state,
		Restarts:        in.restarts,
		Runtime:         runtimeName(in),
		RuntimeReason:   in.rec.GetRuntimeReason(),
		Reason:          reason,
		Message:         message,
		UpdatedUnixNano: w.clock.Now().UnixNano(),
	}
}

// setStatusLocked publishes st as in's latest status.
func (w *Worker) setStatusLocked(in *instance, st *pb.InstanceStatus) {
	in.status = st
	w.statuses.add(st)
}

func kindOf(spec *pb.WorkloadSpec) string {
	if k := spec.GetKind(); k != "" {
		return k
	}
	return defaultKind
}

// filesOf maps the files a spec carries by path.
func filesOf(files []*pb.MountedFile) map[string][]byte {
	if len(files) == 0 {
		return nil
	}
	out := make(map[string][]byte, len(files))
	for _, f := range files {
		out[f.GetPath()] = f.GetData()
	}
	return out
}

func envList(vars []*pb.EnvVar) []string {
	if len(vars) == 0 {
		return nil
	}
	env := make([]string, len(vars))
	for i, v := range vars {
		env[i] = v.GetName() + "=" + v.GetValue()
	}
	return env
}

// artifactOf names the artifact a spec runs, for Release.
func (w *Worker) artifactOf(spec *pb.WorkloadSpec) (runtimeapi.Artifact, bool) {
	if usesImageRef(spec) {
		return runtimeapi.Artifact{Ref: spec.GetImage()}, true
	}
	path, err := w.modules.Path(spec.GetModuleDigest())
	if err != nil {
		return runtimeapi.Artifact{}, false
	}
	return runtimeapi.Artifact{Digest: spec.GetModuleDigest(), Path: path}, true
}
