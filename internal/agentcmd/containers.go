package agentcmd

import (
	"context"
	"log/slog"
	"strings"

	"github.com/wasmorch/wasmorch/wasmrt"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// DefaultContainerdSocket is where containerd answers on most systems.
const DefaultContainerdSocket = "/run/containerd/containerd.sock"

// ContainerdHelp describes --containerd-socket.
const ContainerdHelp = "containerd socket; the worker offers the container runtime only when containerd answers there (\"\" disables it)"

// ContainerRuntime offers containers to a worker: it connects to
// containerd on socket for the worker whose data is in dataDir, and
// returns nil when it does not offer them (ctrrt.Offer). The slim
// wasmorch-agent has none, so as not to link containerd's client.
type ContainerRuntime func(ctx context.Context, logger *slog.Logger, socket, dataDir string) runtimeapi.Runtime

// WithContainers appends the container runtime to rts unless it is
// disabled or not in this binary (containers nil), and returns a function
// that closes it.
func WithContainers(ctx context.Context, logger *slog.Logger, containers ContainerRuntime, socket, dataDir string, rts []runtimeapi.Runtime) ([]runtimeapi.Runtime, func() error) {
	var crt runtimeapi.Runtime
	switch {
	case containers == nil && socket != "":
		logger.Info("container runtime not offered: this binary runs WebAssembly only; 'wasmorch agent' (the full binary) also runs containers", "containerd-socket", socket)
	case containers != nil:
		crt = containers(ctx, logger, socket, dataDir)
	}
	if crt == nil {
		return rts, func() error { return nil }
	}
	return append(rts, crt), func() error {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), RuntimeCloseTimeout)
		defer cancel()
		return crt.Close(cctx)
	}
}

// RuntimeNames lists the runtimes' names for the banner; one that waits
// for its daemon says so, and the Wasm runtime says which engine runs its
// modules when it is the interpreter.
func RuntimeNames(rts []runtimeapi.Runtime) string {
	names := make([]string, 0, len(rts))
	for _, rt := range rts {
		name := rt.Name()
		if e, ok := rt.(interface{ Engine() string }); ok && e.Engine() == wasmrt.EngineInterpreter {
			name += " (interpreter)"
		}
		if w, ok := rt.(interface{ AwaitsDaemon() bool }); ok && w.AwaitsDaemon() {
			name += " (once containerd answers)"
		}
		names = append(names, name)
	}
	return strings.Join(names, ", ")
}
