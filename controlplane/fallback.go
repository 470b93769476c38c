package controlplane

import (
	"context"

	"github.com/distribution/reference"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/controlplane/scheduler"
	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/wasmrt"
)

// A wasm workload may carry a fallback image (an image reference or an
// uploaded OCI image archive) that runs as a container where the module
// cannot run: on nodes without the wasm runtime, and everywhere when the
// module needs what the wasm runtime does not provide (found at upload:
// BlobMeta.wasm_unsupported). The scheduler chooses per node
// (scheduler/fallback.go); the worker runs the instance with the runtime
// its record names.

// maxPort is the highest TCP port.
const maxPort = 65535

// validateFallback checks a spec's fallback image and HTTP port on their
// own.
func validateFallback(spec *v1.WorkloadSpec) error {
	image, digest := spec.GetFallbackImage(), spec.GetFallbackArchiveDigest()
	if p := spec.GetPort(); p < 0 || p > maxPort {
		return errdefs.Invalidf("port %d is outside 1..%d", p, maxPort)
	}
	if spec.GetKind() == kindContainer {
		if image != "" || digest != "" {
			return errdefs.Invalidf("a fallback image belongs to a wasm workload; a container workload runs its image everywhere")
		}
	} else if spec.GetPort() != 0 && image == "" && digest == "" {
		return errdefs.Invalidf("a port is for HTTP containers: a wasm function is served CGI-style; give it a fallback image or drop the port")
	}
	if spec.GetPort() != 0 && spec.GetHttp() == nil {
		return errdefs.Invalidf("port %d is where the gateway sends HTTP requests: give the workload a route too", spec.GetPort())
	}
	switch {
	case image != "" && digest != "":
		return errdefs.Invalidf("a fallback is an image reference (%q) or an uploaded image archive, not both", image)
	case digest != "":
		_, err := blobs.ParseDigest(digest)
		return err
	case image != "":
		if _, err := reference.ParseNormalizedNamed(image); err != nil {
			return errdefs.Invalidf("fallback image reference %q is not valid: %v", image, err)
		}
	}
	return nil
}

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
		return nil
	}
	spec.WasmUnsupported = unsupported
	spec.FallbackMemoryRequestBytes = spec.GetMemoryBytes()
	if spec.FallbackMemoryRequestBytes == 0 {
		spec.FallbackMemoryRequestBytes = DefaultMemory
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
