package wasmrt

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// BenchmarkCGIServe is one function call without HTTP: a fresh instance
// of greet.wasm (C) with the CGI environment, run, response parsed.
func BenchmarkCGIServe(b *testing.B) {
	r := newTestRuntime(b, Config{})
	fn, err := r.PrepareFunction(context.Background(), testArtifact(b, "greet.wasm"), runtimeapi.FunctionSpec{Env: []string{"GREETING=hi"}})
	if err != nil {
		b.Fatal(err)
	}
	defer fn.Close()
	req := httptest.NewRequest("GET", "http://fn.example/greet?who=bench", nil)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		rec := httptest.NewRecorder()
		res := fn.Serve(ctx, rec, &runtimeapi.FunctionRequest{HTTP: req, ScriptName: "/greet", RemoteAddr: "127.0.0.1:1", Timeout: safetyTimeout})
		if res.Outcome != runtimeapi.OutcomeOK {
			b.Fatal(res)
		}
	}
}
