package api

import (
	"context"

	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"

	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Container workloads run an OCI image: an uploaded image archive (a blob,
// named by module_digest like a module) or an image reference each node
// pulls (image). Exactly one of the two.

// resolveContainerSource checks that a container spec's archive has been
// uploaded as an image archive, and sets what each instance reserves on
// its node: its memory limit, as a container's memory is not measured
// from a module.
func (s *Server) resolveContainerSource(ctx context.Context, spec *v1.WorkloadSpec) error {
	spec.MemoryRequestBytes = spec.GetMemoryBytes()
	if spec.MemoryRequestBytes == 0 {
		spec.MemoryRequestBytes = workloads.DefaultMemory
	}
	if spec.GetModuleDigest() == "" {
		spec.ModuleSize = 0
		return nil
	}
	meta, err := s.blobs.Stat(ctx, spec.GetModuleDigest())
	if errdefs.IsNotFound(err) {
		return errdefs.Preconditionf("image archive %s has not been uploaded; upload it first ('wasmorch deploy IMAGE-oci.tar' does both)", spec.GetModuleDigest())
	} else if err != nil {
		return err
	}
	if meta.GetMediaType() != ociarchive.MediaType {
		return errdefs.Preconditionf("blob %s is %s, not an OCI image archive: deploy it as a wasm workload", spec.GetModuleDigest(), meta.GetMediaType())
	}
	spec.ModuleSize = meta.GetSize()
	return nil
}
