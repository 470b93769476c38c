package e2e

import (
	"net/http"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/internal/ctrtest"
)

// TestContainerHTTPFunction deploys a static Go HTTP server, packed into an
// OCI image archive by the test, as an HTTP container function: the gateway
// proxies the route to the container's $PORT like to a Wasm function, with
// the function's body limit and request timeout; the worker checks each
// replica's health path in the container before it gets traffic.
func TestContainerHTTPFunction(t *testing.T) {
	d := ctrtest.Start(t)
	archive := ctrtest.HTTPServerImage(t)
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t), "--containerd-socket", d.Socket)

	c.deployFunction(archive, "api", "/api", "--port", "9090", "--replicas", "2", "--max-body", "1Ki", "--request-timeout", "300ms",
		"--health-path", "/healthz", "--health-interval", "200ms")
	insts := c.instanceDetails("api")
	if len(insts) != 2 || insts[0].Runtime != "container" || insts[0].State != "Running" {
		t.Fatalf("instances of api = %s, want two Running as containers", toJSON(insts))
	}

	// Both replicas listen on the same port, each in its own network.
	for range 4 {
		expect(t, "GET /api/hello", c.call(request{path: "/api/hello?x=1"}), http.StatusOK,
			"hello from a container: GET /api/hello?x=1 port=9090 forwarded-for=127.0.0.1")
	}
	expect(t, "POST /api/echo", c.call(request{method: http.MethodPost, path: "/api/echo", body: strings.NewReader("ping-pong")}),
		http.StatusOK, "ping-pong")
	expect(t, "a body over --max-body", c.call(request{method: http.MethodPost, path: "/api/echo", body: strings.NewReader(strings.Repeat("x", 2048))}),
		http.StatusRequestEntityTooLarge, "413")
	expect(t, "a request over --request-timeout", c.call(request{path: "/api/sleep"}), http.StatusGatewayTimeout, "504")

	eventually(t, "the requests in the logs", func() (bool, string) {
		logs := c.mustRun("logs", "api").stdout
		return strings.Contains(logs, "httpserver: GET /api/hello") && strings.Contains(logs, "httpserver: GET /api/healthz"), logs
	})

	c.mustRun("delete", "api")
	eventually(t, "the containers and their snapshots removed", func() (bool, string) {
		ctrs, snaps := leftovers(t, d)
		return len(ctrs) == 0 && len(snaps) == 0, "containers " + strings.Join(ctrs, ",") + " snapshots " + strings.Join(snaps, ",")
	})
}
