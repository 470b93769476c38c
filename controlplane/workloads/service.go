package workloads

import (
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// validateService checks a spec's port: where an HTTP container listens,
// or the port of a Wasm service (docs/services.md), behind a route or, for
// a plain TCP service, on its node's own port.
func validateService(spec *v1.WorkloadSpec) error {
	port := spec.GetPort()
	if port < 0 || port > maxPort {
		return errdefs.Invalidf("port %d is outside 1..%d", port, maxPort)
	}
	if !spec.GetTcp() {
		if port != 0 && spec.GetHttp() == nil {
			return errdefs.Invalidf("port %d is where the gateway sends HTTP requests: give the workload a route too, or make it a plain TCP service (tcp)", port)
		}
		return nil
	}
	switch {
	case spec.GetKind() == KindContainer:
		return errdefs.Invalidf("a plain TCP service (tcp) is a Wasm service: a container publishes no port on its node")
	case port == 0:
		return errdefs.Invalidf("a plain TCP service (tcp) needs the node port it serves on (port)")
	case spec.GetHttp() != nil:
		return errdefs.Invalidf("a plain TCP service (tcp) has no route: drop the route, or tcp to serve HTTP through the gateway")
	case spec.GetFallbackImage() != "" || spec.GetFallbackArchiveDigest() != "":
		return errdefs.Invalidf("a plain TCP service (tcp) has no fallback image: its container would not serve on the node's port")
	}
	return nil
}
