package cliclient

import (
	"fmt"

	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/wasmrt"
)

// `deploy server.wasm --port 8080 --route /api` makes a Wasm service: a
// long-running instance that accepts connections on a listener the worker
// preopens for it, the gateway sending the route's requests there;
// `--port N --tcp` a plain TCP service on its node's port N. For an image,
// --port is where its HTTP container listens (docs/services.md).

// readService checks --port and --tcp against the rest of the spec and
// sets them in spec.
func readService(cfg DeployConfig, spec *wasmorchv1.WorkloadSpec) error {
	if cfg.Port < 0 || cfg.Port > 65535 || cfg.TCP && cfg.Port == 0 {
		return Errorf("e.g. --port 8080", "invalid --port %d: a TCP port is 1-65535", cfg.Port)
	}
	switch {
	case !cfg.TCP && cfg.Port != 0 && spec.Http == nil:
		return Errorf("add --route /PATH (the gateway sends its requests to the port), or --tcp to serve plain TCP on the node's port", "--port needs --route or --tcp")
	case cfg.TCP && spec.Kind == kindContainer:
		return Errorf("a container publishes no port on its node; give it --route to serve HTTP", "--tcp is for Wasm services")
	case cfg.TCP && spec.Http != nil:
		return Errorf("drop --route to serve plain TCP on the node's port, or --tcp to serve HTTP through the gateway", "--tcp takes no --route")
	case cfg.TCP && cfg.FallbackImage != "":
		return Errorf("drop --fallback-image: its container would not serve on the node's port", "--tcp takes no --fallback-image")
	}
	spec.Port, spec.Tcp = int32(cfg.Port), cfg.TCP
	return nil
}

// checkServiceModule refuses --port for a module that cannot accept
// connections (it does not import sock_accept): a CGI function, say.
func checkServiceModule(cfg DeployConfig, wasm []byte) error {
	if cfg.Port == 0 || wasm == nil || cfg.FallbackImage != "" && wasmrt.IsComponent(wasm) {
		return nil
	}
	ok, err := wasmrt.AcceptsConnections(wasm)
	if err != nil || ok {
		return nil // validation says what is wrong with the module
	}
	return &Error{
		What: fmt.Sprintf("--port: %s does not import wasi_snapshot_preview1.sock_accept, so it cannot accept connections on a listener", cfg.File),
		Hint: "drop --port to serve it as a CGI function, or build a server that accepts on its preopened listener (docs/services.md)",
	}
}
