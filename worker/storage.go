package worker

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

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

// Named volumes: an instance that mounts volume NAME gets the directory
// DataDir/volumes/NAME.UID (UID from its record, which the control plane
// created when it bound the first instance that mounts it to this node),
// created if need be and never removed with an instance: it outlives
// restarts, redeploys and rollouts, and a worker killed and started again
// finds it.

// volumesDir is the subdirectory of DataDir that holds named volumes.
const volumesDir = "volumes"

// instanceVolumes returns the mounts of the named volumes of an instance,
// creating their directories.
func (w *Worker) instanceVolumes(rec *pb.Instance) ([]runtimeapi.Mount, *runtimeapi.Exit) {
	var mounts []runtimeapi.Mount
	for _, vm := range rec.GetSpec().GetVolumes() {
		uid := rec.GetVolumeUids()[vm.GetName()]
		dir := vm.GetName() + "." + uid
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

// instanceMounts returns the instance's mounts: its named volumes and its
// scratch space, creating their directories; none when it does not run on
// the wasm runtime (a container has a writable root of its own).
func (w *Worker) instanceMounts(in *instance, spec *pb.WorkloadSpec) ([]runtimeapi.Mount, *runtimeapi.Exit) {
	if in.rt == nil || in.rt.Name() != "wasm" {
		return nil, nil
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
