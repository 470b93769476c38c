package worker

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/wasmorch/wasmorch/internal/manifest"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// State (issue 14): an instance of a wasm workload with scratch_bytes gets
// a writable /tmp of its own, DataDir/scratch/<instance id>, which the wasm
// runtime keeps within scratch_bytes (writes past it fail with ENOSPC). It
// lasts as long as the instance is on the node, across restarts of its
// guest, like a Kubernetes emptyDir; it is removed with the instance, and
// those of instances the node no longer has are removed once the worker
// has the whole set of its assignments (after a restart).

// scratchDir is the subdirectory of DataDir that holds scratch spaces.
const scratchDir = "scratch"

// scratchGuestPath is where an instance sees its scratch space.
const scratchGuestPath = "/tmp"

// instanceScratch returns the instance's scratch space mount, creating its
// directory, or no mount when its spec asks for none or it does not run
// on the wasm runtime (a container has a writable root of its own).
func (w *Worker) instanceScratch(in *instance, spec *pb.WorkloadSpec) ([]runtimeapi.Mount, *runtimeapi.Exit) {
	size := spec.GetScratchBytes()
	if size <= 0 || in.rt == nil || in.rt.Name() != "wasm" {
		return nil, nil
	}
	if size > w.cfg.MaxScratchBytes {
		return nil, &runtimeapi.Exit{Reason: runtimeapi.ReasonStartError, Permanent: true, Message: fmt.Sprintf(
			"scratch space of %s is over the %s an instance may have on node %s (agent|up --max-scratch)",
			manifest.FormatBytes(size), manifest.FormatBytes(w.cfg.MaxScratchBytes), w.cfg.NodeName)}
	}
	dir, err := w.scratchPath(in.id())
	if err == nil {
		err = os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		return nil, &runtimeapi.Exit{Reason: runtimeapi.ReasonStartError, Message: "scratch space: " + err.Error()}
	}
	return []runtimeapi.Mount{{GuestPath: scratchGuestPath, HostPath: dir, LimitBytes: size}}, nil
}

// scratchPath is where instance id's scratch space is kept.
func (w *Worker) scratchPath(id string) (string, error) {
	if id == "" || id != filepath.Base(id) || id == "." || id == ".." {
		return "", fmt.Errorf("instance ID %q cannot name a directory", id)
	}
	return filepath.Join(w.cfg.DataDir, scratchDir, id), nil
}

// removeScratch removes instance id's scratch space, if it has one.
func (w *Worker) removeScratch(id string) {
	dir, err := w.scratchPath(id)
	if err != nil {
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		w.logger.Warn("removing scratch space", "instance", id, "err", err)
	}
}

// removeUnknownScratch removes the scratch spaces of instances the worker
// does not have (those of a previous process, after a restart).
func (w *Worker) removeUnknownScratch() {
	entries, err := os.ReadDir(filepath.Join(w.cfg.DataDir, scratchDir))
	if err != nil {
		return // none yet
	}
	w.mu.Lock()
	var unknown []string
	for _, e := range entries {
		if _, ok := w.instances[e.Name()]; !ok {
			unknown = append(unknown, e.Name())
		}
	}
	w.mu.Unlock()
	for _, id := range unknown {
		w.removeScratch(id)
	}
}
