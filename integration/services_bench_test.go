package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// BenchmarkWasmServiceRequest compares a request through the gateway to a
// Wasm service (a long-running instance serving on its preopened
// listener, reached through the worker's function server: docs/services.md)
// with the same handler native, a Go net/http server on the same loopback,
// measured in the same run: p50 latency of one client and requests per
// second with benchClients clients, and their ratios to the native
// handler ("x-native-p50", "pct-native-rps"). goserver.wasm is that very
// handler built for wasip1; cserver.wasm answers one connection at a time
// and closes it, so each request also connects and accepts.
func BenchmarkWasmServiceRequest(b *testing.B) {
	up := start(b, options{})
	service := func(s *v1.WorkloadSpec) { s.Port = 8080 }
	up.deployFunction(b, "gosvc", "goserver.wasm", "/gosvc", service)
	up.deployFunction(b, "csvc", "cserver.wasm", "/csvc", service)

	// goserver's handler (testdata/goserver/main.go), natively.
	native := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/healthz") {
			fmt.Fprintln(w, "ok")
			return
		}
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "hello from go: %s %s (%d bytes)\n", r.Method, r.URL.Path, n)
	}))
	defer native.Close()

	var base benchResult
	for _, tt := range []struct{ name, url string }{
		{"native-go", native.URL + "/gosvc/x"},
		{"gateway-go-wasip1-service", "http://" + up.http + "/gosvc/x"},
		{"gateway-c-service", "http://" + up.http + "/csvc/x"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			if tt.name != "native-go" {
				// The baseline again, right before: the machine's load drifts.
				base = benchRequests(b, native.URL+"/gosvc/x", false)
			}
			res := benchRequests(b, tt.url, true)
			if tt.name == "native-go" {
				return
			}
			b.ReportMetric(float64(res.p50)/float64(base.p50), "x-native-p50")
			b.ReportMetric(100*res.rps/base.rps, "pct-native-rps")
		})
	}
}
