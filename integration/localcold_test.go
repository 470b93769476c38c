package integration

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker"
)

// TestLocalListenerStartsFunctionsAtZeroReplicasCold (edge): the agent's
// local listener (--local-http) answers a function scaled to zero, of
// which no replica ever ran on the node, by a cold start, with its config
// files and environment from a config; a function whose selector excludes the node is never sent to it
// (404); a deleted function, and one changed to a selector that excludes
// the node, leave it at once (404). Local requests never reach a gateway:
// the function stays at zero replicas.
func TestLocalListenerStartsFunctionsAtZeroReplicasCold(t *testing.T) {
	a := start(t, options{worker: func(c *worker.Config) { c.LocalHTTPAddr = "127.0.0.1:0" }})
	ctx := context.Background()
	local := "http://" + a.worker.LocalHTTPAddr()
	get := func(path string) (int, string) {
		resp, err := http.Get(local + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	atZero := func() *v1.Autoscale {
		return &v1.Autoscale{MinReplicas: 0, MaxReplicas: 2, IdleMs: time.Hour.Milliseconds()}
	}
	if _, err := a.control.SetConfig(ctx, &v1.SetConfigRequest{Name: "app", Data: map[string]string{"greeting": "hello from the site"}}); err != nil {
		t.Fatal(err)
	}
	a.deploy(t, "far", "greet.wasm", &v1.WorkloadSpec{Kind: "wasm", Http: &v1.HttpTrigger{Route: "/far"}, Autoscale: atZero(),
		Placement: &v1.Placement{Selector: map[string]string{"site": "far"}}})
	if _, err := a.control.SetConfig(ctx, &v1.SetConfigRequest{Name: "env", Data: map[string]string{"GREETING": "from-config"}}); err != nil {
		t.Fatal(err)
	}
	a.deploy(t, "greetcfg", "greet.wasm", &v1.WorkloadSpec{Kind: "wasm", Http: &v1.HttpTrigger{Route: "/greetcfg"}, Autoscale: atZero(), Configs: []string{"env"}})
	a.deploy(t, "cat", "catfn.wasm", &v1.WorkloadSpec{Kind: "wasm", Http: &v1.HttpTrigger{Route: "/cat"}, Autoscale: atZero(), ConfigFiles: []string{"app"}})
	a.deploy(t, "greet", "greet.wasm", &v1.WorkloadSpec{Kind: "wasm", Http: &v1.HttpTrigger{Route: "/greet"}, Autoscale: atZero()})

	a.waitFor(t, "greet answered on the local listener", func() (bool, string) {
		code, body := get("/greet?who=site")
		return code == http.StatusOK && body == "hello, site!\n", body
	})
	if code, body := get("/cat/config/app/greeting"); code != http.StatusOK || body != "hello from the site" {
		t.Fatalf("cat's config file, started cold: %d %q", code, body)
	}
	if code, body := get("/greetcfg?who=site"); code != http.StatusOK || body != "from-config, site!\n" {
		t.Fatalf("greetcfg's environment from a config, started cold: %d %q", code, body)
	}
	// far was applied before greet: the node would have heard of it first.
	if code, body := get("/far"); code != http.StatusNotFound {
		t.Fatalf("GET /far, whose selector excludes the node: %d %q, want 404", code, body)
	}
	for _, name := range []string{"greet", "cat", "greetcfg"} {
		if insts := a.instances(t, name); len(insts) != 0 {
			t.Fatalf("%s has instances: %s; local requests must not scale it", name, describe(insts))
		}
	}

	if _, err := a.control.DeleteWorkload(ctx, &v1.DeleteWorkloadRequest{Name: "greet"}); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, "greet gone from the local listener", func() (bool, string) {
		code, body := get("/greet?who=site")
		return code == http.StatusNotFound, body
	})

	wl, err := a.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: "cat"})
	if err != nil {
		t.Fatal(err)
	}
	spec := proto.Clone(wl.GetWorkload().GetSpec()).(*v1.WorkloadSpec)
	spec.Placement = &v1.Placement{Selector: map[string]string{"site": "far"}}
	if _, err := a.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "cat", Spec: spec}); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, "cat gone from the local listener once its selector excludes the node", func() (bool, string) {
		code, body := get("/cat/config/app/greeting")
		return code == http.StatusNotFound, body
	})
}
