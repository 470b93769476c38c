package worker

import (
	"context"
	"time"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/modcache"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// edge: failures that are the node's rather than the instance's. An
// instance that fails so reports InstanceStatus.unfit: the controller
// replaces it on another node and keeps its workload revision off this
// one (docs/edge.md, "A node that cannot run a module").

// ReasonModuleTooLarge is the reason of an instance whose module (or image
// archive) is larger than the node's module cache (agent
// --module-cache-size).
const ReasonModuleTooLarge = "ModuleTooLarge"

// unfitOf classes a failure of in on this node: a failure no start on
// this node can get past, whatever its restarts, but which another node
// may not have.
//
//   - a module over the node's module cache: disk;
//   - a Wasm module the node's runtime rejects as invalid or whose imports
//     it lacks: the control plane validated the module and its imports
//     with its own runtime before storing it, so this node's runtime
//     (an older agent, another engine) is what lacks something;
//   - a container image archive for another platform;
//   - a memory limit over the node's whole allocatable memory (memory.go).
func unfitOf(in *instance, e runtimeapi.Exit) pb.NodeUnfit {
	switch e.Reason {
	case ReasonModuleTooLarge:
		return pb.NodeUnfit_NODE_UNFIT_DISK
	case runtimeapi.ReasonWrongArch:
		return pb.NodeUnfit_NODE_UNFIT_ARCH
	case ReasonMemoryUnfit:
		return pb.NodeUnfit_NODE_UNFIT_MEMORY
	case runtimeapi.ReasonInvalid, runtimeapi.ReasonImportError:
		if e.Permanent && kindOf(in.rec.GetSpec()) == kindWasm {
			return pb.NodeUnfit_NODE_UNFIT_ENGINE
		}
	}
	return pb.NodeUnfit_NODE_UNFIT_UNSPECIFIED
}

// compileTrimInterval is how often the compiled-code cache is trimmed to
// the module cache's bound.
const compileTrimInterval = 30 * time.Second

// trimCompiled keeps wazero's compiled-code cache (CompileCacheDir)
// within ModuleCacheBytes, oldest files first, now and every
// compileTrimInterval until ctx is done. wazero reads a file only when it
// compiles a module: one removed costs a compilation, never a running
// instance.
func (w *Worker) trimCompiled(ctx context.Context) {
	if w.cfg.ModuleCacheBytes <= 0 {
		return
	}
	for {
		if n, freed, err := modcache.TrimDir(w.cfg.CompileCacheDir(), w.cfg.ModuleCacheBytes); err != nil {
			w.logger.Warn("trimming the compiled-code cache", "err", err)
		} else if n > 0 {
			w.logger.Info("trimmed the compiled-code cache", "files", n, "bytes", freed)
		}
		if !sleep(ctx, w.clock, compileTrimInterval) {
			return
		}
	}
}
