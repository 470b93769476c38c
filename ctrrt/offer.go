package ctrrt

import (
	"context"
	"log/slog"
	"path/filepath"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// Offer connects to containerd on socket for the worker whose data is in
// dataDir (wasmorch up and agent). When containerd does not answer yet it
// says so and returns a runtime that connects once it does (the worker
// offers it from then on); nil when socket is empty or the runtime cannot
// be configured.
func Offer(ctx context.Context, logger *slog.Logger, socket, dataDir string) runtimeapi.Runtime {
	if socket == "" {
		logger.Info("container runtime disabled (--containerd-socket is empty)")
		return nil
	}
	if abs, err := filepath.Abs(dataDir); err == nil {
		dataDir = abs
	}
	cfg := DefaultConfig()
	cfg.Socket = socket
	// The shim opens the pipes by path, from its own working directory.
	cfg.FIFODir = filepath.Join(dataDir, "fifo")
	// Configs and secrets mounted as files, a directory per container.
	cfg.FilesDir = filepath.Join(dataDir, "files")
	cfg.Logger = logger.With("component", "ctrrt")
	rt, err := New(ctx, cfg)
	if err == nil {
		logger.Info("container runtime offered", "containerd-socket", socket, "namespace", cfg.Namespace)
		return rt
	}
	deferred, derr := NewDeferred(cfg)
	if derr != nil {
		logger.Info("container runtime not offered", "containerd-socket", socket, "reason", derr)
		return nil
	}
	logger.Info("container runtime not offered until containerd answers", "containerd-socket", socket, "reason", err)
	return deferred
}

// AwaitsDaemon says that containerd has not answered yet: the runtime is
// not offered until it does (the banners of up and agent say so).
func (d *Deferred) AwaitsDaemon() bool { return d.runtime() == nil }
