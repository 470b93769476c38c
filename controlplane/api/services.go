package api

import (
	"context"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/scheduler"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/resources"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/wasmrt"
)

// Services (docs/services.md) at apply: a plain TCP service's node port
// is refused when another workload serves on it (checkPortIn here, from
// the cache; the claim written with the workload, workloads.ClaimPort,
// settles a race), and a service's module must be able to accept
// connections (checkAccepts).

// checkPortIn refuses spec's node port when another workload serves on
// it. name is the workload being applied: its own port is no conflict.
func checkPortIn(r cache.Reader, name string, spec *v1.WorkloadSpec) error {
	port := resources.NodePort(spec)
	if port == 0 {
		return nil
	}
	holder, ok := r.PortHolder(port)
	if !ok || holder == name {
		return nil
	}
	return workloads.PortTaken(port, holder)
}

// checkAccepts refuses a Wasm service (a wasm workload with a port) whose
// module does not import sock_accept: it could never accept a connection
// on its listener (a CGI function, say). meta is the module's blob
// record: what its upload read of its imports, or, for a blob stored
// before that was recorded, its import section read now. A module the
// wasm runtime cannot run at all, deployed with a fallback image, runs as
// that container, which listens on the port itself.
func (s *Server) checkAccepts(ctx context.Context, spec *v1.WorkloadSpec, meta *v1.BlobMeta) error {
	if spec.GetPort() == 0 || meta.GetWasmUnsupported() != "" && scheduler.HasFallback(spec) {
		return nil
	}
	accepts := meta.GetWasmAcceptsConnections()
	if !meta.GetWasmImportsRead() {
		wasm, err := s.blobs.Read(ctx, spec.GetModuleDigest())
		if err != nil {
			return err
		}
		if accepts, err = wasmrt.AcceptsConnections(wasm); err != nil {
			return nil // not a core module: what runs it says what is wrong
		}
	}
	if accepts {
		return nil
	}
	return errdefs.Invalidf("port %d: module %s does not import wasi_snapshot_preview1.sock_accept, so it cannot accept connections on a listener: deploy it without a port (a CGI function), or build a server that accepts on its preopened listener (docs/services.md)",
		spec.GetPort(), spec.GetModuleDigest())
}
