package api

import (
	"context"

	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/wasmrt"

	"github.com/wasmorch/wasmorch/controlplane/scheduler"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// A wasm workload may carry a fallback image (an image reference or an
// uploaded OCI image archive) that runs as a container where the module
// cannot run: on nodes without the wasm runtime, and everywhere when the
// module needs what the wasm runtime does not provide (found at upload:
// BlobMeta.wasm_unsupported). The scheduler chooses per node
// (scheduler/fallback.go); the worker runs the instance with the runtime
// its record names.

// resolveFallback completes a wasm spec from its module's metadata: a
// module the wasm runtime cannot run is refused without a fallback when
// it cannot even start (a component), and with one the spec records why
// and what its container reserves on a node.
func (s *Server) resolveFallback(ctx context.Context, spec *v1.WorkloadSpec, module *v1.BlobMeta) error {
	unsupported := module.GetWasmUnsupported()
	if !scheduler.HasFallback(spec) {
		if unsupported == wasmrt.ComponentUnsupported {
			return errdefs.Preconditionf("module %s cannot run as Wasm: it is %s; deploy it with a fallback image (--fallback-image) to run that as a container", spec.GetModuleDigest(), unsupported)
		}
		if unsupported != "" {
			// Every node's wasm runtime would fail it the same way: say so
			// now rather than store a workload that can never start.
			return errdefs.Invalidf("module %s cannot run as Wasm: %s; rebuild it for WASI preview 1, or deploy it with a fallback image (--fallback-image) to run that as a container", spec.GetModuleDigest(), unsupported)
		}
		return nil
	}
	spec.WasmUnsupported = unsupported
	spec.FallbackMemoryRequestBytes = spec.GetMemoryBytes()
	if spec.FallbackMemoryRequestBytes == 0 {
		spec.FallbackMemoryRequestBytes = workloads.DefaultMemory
	}
	digest := spec.GetFallbackArchiveDigest()
	if digest == "" {
		return nil
	}
	meta, err := s.blobs.Stat(ctx, digest)
	if errdefs.IsNotFound(err) {
		return errdefs.Preconditionf("fallback image archive %s has not been uploaded; upload it first ('wasmorch deploy FILE.wasm --fallback-image IMAGE-oci.tar' does both)", digest)
	} else if err != nil {
		return err
	}
	if meta.GetMediaType() != ociarchive.MediaType {
		return errdefs.Preconditionf("fallback blob %s is %s, not an OCI image archive", digest, meta.GetMediaType())
	}
	return nil
}

// checkMemoryLimit refuses a wasm spec whose memory limit is below its
// module's initial memory: no instance of it could ever be created.
func checkMemoryLimit(spec *v1.WorkloadSpec, module *v1.BlobMeta) error {
	limit := spec.GetMemoryBytes()
	if limit == 0 {
		limit = workloads.DefaultMemory
	}
	if need := module.GetWasmMinMemoryBytes(); need > limit {
		return errdefs.Invalidf("module %s needs %s of initial memory, more than its memory limit of %s; raise --memory (memory: in a manifest) to %s or more",
			spec.GetModuleDigest(), wasmrt.BytesText(need), wasmrt.BytesText(limit), wasmrt.BytesText(need))
	}
	return nil
}
