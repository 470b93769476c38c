package gateway

import (
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// A function with config or secret files is never started cold: the spec
// a cold start runs from names the files but does not hold them.
func TestNoColdStartForAFunctionWithFiles(t *testing.T) {
	autoscaled := func(name string, files ...string) *v1.Workload {
		wl := function(name, "/"+name, "")
		wl.Spec.ModuleDigest = "sha256:aa"
		wl.Spec.Autoscale = &v1.Autoscale{MaxReplicas: 2}
		wl.Spec.ConfigFiles = files
		return wl
	}
	withSecret := autoscaled("secret")
	withSecret.Spec.SecretFiles = []string{"db"}
	s := snapshot{
		workloads: []*v1.Workload{autoscaled("plain"), autoscaled("config", "app"), withSecret},
		nodes:     map[string]*v1.Node{"n1": {Name: "n1", HttpAddress: "127.0.0.1:1", Runtimes: []string{"wasm"}}},
		alive:     map[string]bool{"n1": true},
	}
	tb := build(s, nil)
	for _, tc := range []struct {
		name string
		cold bool
	}{{"plain", true}, {"config", false}, {"secret", false}} {
		r := tb.match("gw", "/"+tc.name)
		if r == nil {
			t.Fatalf("%s is not routed", tc.name)
		}
		if cold := r.specHeader != "" && len(r.coldTargets) > 0; cold != tc.cold {
			t.Errorf("%s: cold start offered = %v (spec header %d bytes, %d targets), want %v", tc.name, cold, len(r.specHeader), len(r.coldTargets), tc.cold)
		}
	}
}
