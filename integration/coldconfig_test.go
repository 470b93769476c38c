package integration

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestColdStartNeverRunsWithoutTheFunctionsConfig: a function whose
// environment comes from a config answers with it, whether a replica
// answers, a cold start while its first replica starts, or the function
// kept from its replica once scaled to zero. A cold start from the
// workload's spec (which names the config but does not hold its values)
// is refused by the worker: the request waits for a replica instead.
func TestColdStartNeverRunsWithoutTheFunctionsConfig(t *testing.T) {
	a := start(t, options{})
	ctx := context.Background()
	if _, err := a.control.SetConfig(ctx, &v1.SetConfigRequest{Name: "app", Data: map[string]string{"GREETING": "from-config"}}); err != nil {
		t.Fatal(err)
	}
	a.deploy(t, "lazy", "greet.wasm", &v1.WorkloadSpec{Kind: "wasm", Replicas: 1, Http: &v1.HttpTrigger{Route: "/lazy"}, Configs: []string{"app"},
		Autoscale: &v1.Autoscale{MinReplicas: 0, MaxReplicas: 2, IdleMs: time.Hour.Milliseconds()}})
	get := func() (int, string) {
		resp, err := http.Get("http://" + a.http + "/lazy?who=ana")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// From the first answer on, while its replica starts.
	a.waitFor(t, "lazy answering", func() (bool, string) {
		code, body := get()
		if code == http.StatusOK && body != "from-config, ana!\n" {
			t.Fatalf("lazy answered %q without its config", body)
		}
		return code == http.StatusOK, body
	})
	a.scaleToZero(t, "lazy")
	if code, body := get(); code != http.StatusOK || body != "from-config, ana!\n" {
		t.Fatalf("lazy from zero: %d %q, want its config's greeting", code, body)
	}
}
