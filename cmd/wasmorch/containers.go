package main

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/wasmorch/wasmorch/ctrrt"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

const containerdHelp = "containerd socket; the worker offers the container runtime only when containerd answers there (\"\" disables it)"

// containerRuntime connects to containerd on socket for the worker whose
// data is in dataDir. When containerd does not answer yet it says so and
// returns a runtime that connects once it does (the worker offers it from
// then on); nil when socket is empty.
func containerRuntime(ctx context.Context, logger *slog.Logger, socket, dataDir string) runtimeapi.Runtime {
	if socket == "" {
		logger.Info("container runtime disabled (--containerd-socket is empty)")
		return nil
	}
	cfg := ctrrt.DefaultConfig()
	cfg.Socket = socket
	// The shim opens the pipes by path, from its own working directory.
	cfg.FIFODir = filepath.Join(absPath(dataDir), "fifo")
	// Configs and secrets mounted as files, a directory per container.
	cfg.FilesDir = filepath.Join(absPath(dataDir), "files")
	cfg.Logger = logger.With("component", "ctrrt")
	rt, err := ctrrt.New(ctx, cfg)
	if err == nil {
		logger.Info("container runtime offered", "containerd-socket", socket, "namespace", cfg.Namespace)
		return rt
	}
	deferred, derr := ctrrt.NewDeferred(cfg)
	if derr != nil {
		logger.Info("container runtime not offered", "containerd-socket", socket, "reason", derr)
		return nil
	}
	logger.Info("container runtime not offered until containerd answers", "containerd-socket", socket, "reason", err)
	return deferred
}

// withContainers appends the container runtime to rts unless it is
// disabled, and returns a function that closes it.
func withContainers(ctx context.Context, logger *slog.Logger, socket, dataDir string, rts []runtimeapi.Runtime) ([]runtimeapi.Runtime, func() error) {
	crt := containerRuntime(ctx, logger, socket, dataDir)
	if crt == nil {
		return rts, func() error { return nil }
	}
	return append(rts, crt), func() error {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), runtimeCloseTimeout)
		defer cancel()
		return crt.Close(cctx)
	}
}

// runtimeNames lists the runtimes' names for the banner; one that waits
// for its daemon says so.
func runtimeNames(rts []runtimeapi.Runtime) string {
	names := make([]string, 0, len(rts))
	for _, rt := range rts {
		name := rt.Name()
		if _, waiting := rt.(*ctrrt.Deferred); waiting {
			name += " (once containerd answers)"
		}
		names = append(names, name)
	}
	return strings.Join(names, ", ")
}
