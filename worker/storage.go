package worker

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wasmorch/wasmorch/internal/manifest"
	"github.com/wasmorch/wasmorch/internal/volumes"
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

// Named volumes: an instance that mounts volume NAME gets the directory
// DataDir/volumes/NAME.UID (UID from its record, which the control plane
// created when it bound the first instance that mounts it to this node),
// created if need be and never removed with an instance: it outlives
// restarts, redeploys and rollouts, and a worker killed and started again
// finds it. A per-instance volume is the record of the instance's replica
// slot, NAME-WORKLOAD-ORDINAL (internal/volumes), in the same place.

// volumesDir is the subdirectory of DataDir that holds named volumes.
const volumesDir = "volumes"

// instanceVolumes returns the mounts of the named volumes of an instance,
// creating their directories.
func (w *Worker) instanceVolumes(rec *pb.Instance) ([]runtimeapi.Mount, *runtimeapi.Exit) {
	var mounts []runtimeapi.Mount
	for _, vm := range rec.GetSpec().GetVolumes() {
		uid := rec.GetVolumeUids()[vm.GetName()]
		dir := volumes.RecordName(vm, rec) + "." + uid
		if uid == "" || dir != filepath.Base(dir) {
			return nil, &runtimeapi.Exit{Reason: runtimeapi.ReasonStartError, Permanent: true,
				Message: fmt.Sprintf("volume %s: the instance record names no directory for it", vm.GetName())}
		}
		path := filepath.Join(w.cfg.DataDir, volumesDir, dir)
		if err := os.MkdirAll(path, 0o700); err != nil {
			return nil, &runtimeapi.Exit{Reason: runtimeapi.ReasonStartError, Message: fmt.Sprintf("volume %s: %v", vm.GetName(), err)}
		}
		mounts = append(mounts, runtimeapi.Mount{GuestPath: vm.GetPath(), HostPath: path})
	}
	for _, hm := range rec.GetSpec().GetMounts() {
		dir, err := w.allowedHostDir(hm.GetHostPath())
		if err != nil {
			return nil, &runtimeapi.Exit{Reason: runtimeapi.ReasonStartError, Permanent: true, Message: "host mount " + hm.GetHostPath() + ": " + err.Error()}
		}
		mounts = append(mounts, runtimeapi.Mount{GuestPath: hm.GetPath(), HostPath: dir, ReadOnly: hm.GetReadOnly()})
	}
	return mounts, nil
}

// allowedHostDir resolves a host directory an instance mounts, with its
// symbolic links, and checks that what it resolves to is a directory
// under one the node allows (resolved too), so that a link cannot lead a
// mount out of them.
func (w *Worker) allowedHostDir(dir string) (string, error) {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "", err
	}
	info, err := os.Stat(real)
	if err != nil {
		return "", err
	}
	if !info.IsDir() {
		return "", fmt.Errorf("%s is not a directory", real)
	}
	for _, a := range w.cfg.AllowedMounts {
		ra, err := filepath.EvalSymlinks(a)
		if err != nil {
			continue
		}
		if ra == "/" || real == ra || strings.HasPrefix(real, ra+string(filepath.Separator)) {
			return real, nil
		}
	}
	return "", fmt.Errorf("not under a directory node %s allows (agent|up --allow-mount %s)", w.cfg.NodeName, strings.Join(w.cfg.AllowedMounts, ","))
}

// scratchGuestPath is where an instance sees its scratch space.
const scratchGuestPath = "/tmp"

// instanceMounts returns the instance's mounts: its named volumes, host
// mounts and scratch space, creating their directories. A container
// (ctrrt) bind-mounts the same volume and host directories a Wasm
// instance would see, and makes its scratch space a tmpfs of the size
// (a host directory cannot be bounded for it): it gets no directory here.
func (w *Worker) instanceMounts(in *instance, spec *pb.WorkloadSpec) ([]runtimeapi.Mount, *runtimeapi.Exit) {
	if in.rt == nil || spec.GetHttp() != nil && in.rt.Name() == "wasm" && !isWasmService(spec) {
		return nil, nil // a Wasm function's requests have scratch spaces of their own (functionScratch)
	}
	mounts, failure := w.instanceVolumes(in.rec)
	if failure != nil {
		return nil, failure
	}
	size := spec.GetScratchBytes()
	if size <= 0 {
		return mounts, nil
	}
	if size > w.cfg.MaxScratchBytes {
		return nil, &runtimeapi.Exit{Reason: runtimeapi.ReasonStartError, Permanent: true, Message: fmt.Sprintf(
			"scratch space of %s is over the %s an instance may have on node %s (agent|up --max-scratch)",
			manifest.FormatBytes(size), manifest.FormatBytes(w.cfg.MaxScratchBytes), w.cfg.NodeName)}
	}
	if in.rt.Name() != "wasm" {
		return append(mounts, runtimeapi.Mount{GuestPath: scratchGuestPath, LimitBytes: size}), nil
	}
	dir, err := w.scratchPath(in.id())
	if err == nil {
		err = os.MkdirAll(dir, 0o700)
	}
	if err != nil {
		return nil, &runtimeapi.Exit{Reason: runtimeapi.ReasonStartError, Message: "scratch space: " + err.Error()}
	}
	return append(mounts, runtimeapi.Mount{GuestPath: scratchGuestPath, HostPath: dir, LimitBytes: size}), nil
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

// A Wasm HTTP function with scratch space gives each request's sandbox a
// /tmp of its own: a new directory under DataDir/function-scratch, made
// by the wasm runtime when the request starts and removed when it ends
// (runtimeapi.FunctionSpec.ScratchDir). A worker killed mid-request
// leaves some behind: the next one empties the directory before it
// serves anything (resetFunctionScratch).

// functionScratchDir is the subdirectory of DataDir that holds the
// scratch spaces of function requests.
const functionScratchDir = "function-scratch"

// resetFunctionScratch empties the directory of function requests'
// scratch spaces, at the worker's start.
func resetFunctionScratch(dataDir string) error {
	dir := filepath.Join(dataDir, functionScratchDir)
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("worker: removing the scratch spaces of earlier function requests: %w", err)
	}
	return os.MkdirAll(dir, 0o700)
}

// functionScratch sets fs's scratch space for a function's requests, the
// workload's size, within the node's allowance.
func (w *Worker) functionScratch(spec *pb.WorkloadSpec, fs *runtimeapi.FunctionSpec) error {
	size := spec.GetScratchBytes()
	if size <= 0 {
		return nil
	}
	if size > w.cfg.MaxScratchBytes {
		return fmt.Errorf("scratch space of %s is over the %s a request may have on node %s (agent|up --max-scratch)",
			manifest.FormatBytes(size), manifest.FormatBytes(w.cfg.MaxScratchBytes), w.cfg.NodeName)
	}
	fs.ScratchBytes, fs.ScratchDir = size, filepath.Join(w.cfg.DataDir, functionScratchDir)
	return nil
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

// A volume removed with `volume rm` leaves a record for its node
// (/wasmorch/volumes-removed/<node>/<uid>); the worker asks for those
// after each (re)connection and every VolumeGCInterval, deletes their
// directories (unless an instance it has still mounts one, as a stopping
// one may), and tells the control plane which it deleted the next time it
// asks, which then forgets them.

// volumeGC is the state of the removal of volume directories.
type volumeGC struct {
	kick   chan struct{}
	forget []string // uids deleted since the control plane was last told
}

// kickNow makes removeVolumes ask at once.
func (v *volumeGC) kickNow() {
	select {
	case v.kick <- struct{}{}:
	default:
	}
}

// removeVolumes deletes the directories of removed volumes until ctx ends.
func (w *Worker) removeVolumes(ctx context.Context) {
	t := time.NewTicker(w.cfg.VolumeGCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.volumeGC.kick:
		}
		if err := w.removeVolumesOnce(ctx); err != nil && ctx.Err() == nil {
			w.logger.Debug("asking for removed volumes", "err", err)
		}
	}
}

func (w *Worker) removeVolumesOnce(ctx context.Context) error {
	client := w.agentClient()
	if client == nil {
		return nil // not connected: the next connection kicks
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := client.RemovedVolumes(ctx, &pb.RemovedVolumesRequest{Node: w.cfg.NodeName, ForgetUids: w.volumeGC.forget})
	if err != nil {
		return err
	}
	w.volumeGC.forget = nil
	inUse := map[string]bool{}
	w.mu.Lock()
	for _, in := range w.instances {
		for _, uid := range in.rec.GetVolumeUids() {
			inUse[uid] = true
		}
	}
	w.mu.Unlock()
	for _, v := range resp.GetVolumes() {
		dir := v.GetName() + "." + v.GetUid()
		if v.GetUid() == "" || dir != filepath.Base(dir) || inUse[v.GetUid()] {
			continue
		}
		if err := os.RemoveAll(filepath.Join(w.cfg.DataDir, volumesDir, dir)); err != nil {
			w.logger.Warn("removing the directory of a removed volume", "volume", v.GetName(), "err", err)
			continue
		}
		w.logger.Info("removed the directory of a removed volume", "volume", v.GetName(), "uid", v.GetUid())
		w.volumeGC.forget = append(w.volumeGC.forget, v.GetUid())
	}
	return nil
}
