package worker

import (
	"context"
	"errors"
	"time"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/modcache"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// Which runtime runs an instance, and what it runs: an uploaded blob (a
// Wasm module or an OCI image archive, fetched by digest into the module
// cache) or, for containers, an image reference the runtime pulls itself.

// runtimeProbeInterval is how often the worker asks runtimes that can go
// away (containerd may stop) whether they still answer.
const runtimeProbeInterval = 2 * time.Second

// errRuntimesChanged ends a session so that the node registers again with
// the runtimes it now offers.
var errRuntimesChanged = errors.New("the runtimes this node offers changed; registering again")

// prober is a runtime that can stop answering while the worker runs.
type prober interface {
	Serving(ctx context.Context) bool
}

// removeUnwantedTimeout bounds removing what a previous worker process
// left running.
const removeUnwantedTimeout = time.Minute

// usesImageRef reports whether spec runs an image reference rather than
// an uploaded blob.
func usesImageRef(spec *pb.WorkloadSpec) bool {
	return spec.GetModuleDigest() == "" && spec.GetImage() != ""
}

// artifactID names what spec runs, for counting the instances that use it.
func artifactID(spec *pb.WorkloadSpec) string {
	if usesImageRef(spec) {
		return "ref:" + spec.GetImage()
	}
	return spec.GetModuleDigest()
}

// fetchArtifact makes spec's artifact available on this node: it fetches
// the blob by digest into the module cache (verified), or names the image
// reference to pull. On failure it returns the Exit to record, and whether
// to retry regardless of the restart policy.
func (w *Worker) fetchArtifact(ctx context.Context, spec *pb.WorkloadSpec) (runtimeapi.Artifact, *runtimeapi.Exit, bool) {
	if usesImageRef(spec) {
		return runtimeapi.Artifact{Ref: spec.GetImage()}, nil, false
	}
	fctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	path, err := w.modules.Get(fctx, spec.GetModuleDigest(), spec.GetModuleSize())
	cancel()
	if err != nil {
		if errors.Is(err, modcache.ErrTooLarge) {
			// edge: this node can never hold it; the control plane places
			// it elsewhere (unfit.go).
			return runtimeapi.Artifact{}, &runtimeapi.Exit{Reason: ReasonModuleTooLarge, Message: err.Error(), Permanent: true}, false
		}
		if errdefs.IsInvalidArgument(err) {
			return runtimeapi.Artifact{}, &runtimeapi.Exit{Reason: ReasonInvalidSpec, Message: err.Error(), Permanent: true}, false
		}
		return runtimeapi.Artifact{}, &runtimeapi.Exit{Reason: ReasonFetchError, Message: err.Error()}, true
	}
	return runtimeapi.Artifact{Digest: spec.GetModuleDigest(), Path: path}, nil, false
}

// runtimeName is the runtime that runs in, as its status reports it; ""
// when this node has none for its kind.
func runtimeName(in *instance) string {
	if in.rt == nil {
		return ""
	}
	return in.rt.Name()
}

// removeUnwanted lets each runtime whose instances outlive the worker
// process (runtimeapi.Adopter) remove those of instances not in want, or
// marked terminating there: the first full desired set after a restart
// says what a previous process left behind. Wanted ones are adopted as
// they start.
func (w *Worker) removeUnwanted(want map[string]*pb.Instance) {
	keep := make(map[string]bool, len(want))
	for id, rec := range want {
		if !terminating(rec) {
			keep[id] = true
		}
	}
	for _, rt := range w.runtimes {
		a, ok := rt.(runtimeapi.Adopter)
		if !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), removeUnwantedTimeout)
		if err := a.RemoveUnwanted(ctx, keep); err != nil {
			w.logger.Warn("removing instances of a previous worker process", "runtime", rt.Name(), "err", err)
		}
		cancel()
	}
}

// offeredRuntimes lists the runtimes the node offers now: all of them but
// those that stopped answering.
func (w *Worker) offeredRuntimes() []string {
	w.unavailableMu.Lock()
	defer w.unavailableMu.Unlock()
	names := make([]string, 0, len(w.cfg.Runtimes))
	for _, rt := range w.cfg.Runtimes {
		if !w.unavailable[rt.Name()] {
			names = append(names, rt.Name())
		}
	}
	return names
}

// watchRuntimes asks the runtimes that can go away whether they answer,
// every runtimeProbeInterval until ctx ends, and signals a change of what
// the node offers: the scheduler then stops (or starts again) placing
// their workloads here. Instances of other runtimes are not affected.
func (w *Worker) watchRuntimes(ctx context.Context) error {
	if len(w.probers()) == 0 {
		return nil
	}
	t := time.NewTicker(runtimeProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		w.probeRuntimes(ctx)
	}
}

func (w *Worker) probers() []runtimeapi.Runtime {
	var probers []runtimeapi.Runtime
	for _, rt := range w.cfg.Runtimes {
		if _, ok := rt.(prober); ok {
			probers = append(probers, rt)
		}
	}
	return probers
}

// probeRuntimesOnce probes before the first registration, which then
// offers what answers: no change to signal yet.
func (w *Worker) probeRuntimesOnce(ctx context.Context) {
	w.probeRuntimes(ctx)
	select {
	case <-w.runtimesChanged:
	default:
	}
}

// probeRuntimes asks each runtime that can go away whether it answers,
// and records (and signals) what changed. Start runs it once before the
// first registration, so that a runtime that does not answer yet (a
// containerd that has not started) is not offered meanwhile. A runtime
// that answers again may find what a previous worker process left: the
// next convergence lets it remove what is not wanted.
func (w *Worker) probeRuntimes(ctx context.Context) {
	for _, rt := range w.probers() {
		pctx, cancel := context.WithTimeout(ctx, runtimeProbeInterval)
		down := !rt.(prober).Serving(pctx)
		cancel()
		w.unavailableMu.Lock()
		changed := w.unavailable[rt.Name()] != down
		w.unavailable[rt.Name()] = down
		w.unavailableMu.Unlock()
		if !changed {
			continue
		}
		w.logger.Warn("runtime availability changed", "runtime", rt.Name(), "offered", !down)
		if !down {
			w.mu.Lock()
			w.pruned = false
			w.mu.Unlock()
			w.kickReconcile()
		}
		select {
		case w.runtimesChanged <- struct{}{}:
		default:
		}
	}
}

// untilRuntimesChange runs beside a session and ends it when the runtimes
// offered change.
func (w *Worker) untilRuntimesChange(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-w.runtimesChanged:
		return errRuntimesChanged
	}
}
