package cliclient

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/internal/manifest"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// canaryView is a function at generation 2 with a canary, promoted up to
// promoted.
func canaryView(canary string, durationMs, promoted int64) *wasmorchv1.WorkloadView {
	w := workloadView(2, 4, always)
	w.Workload.PromotedGeneration = promoted
	w.Workload.Spec.Canary, w.Workload.Spec.CanaryDurationMs = canary, durationMs
	return w
}

func fourOld(more ...*wasmorchv1.InstanceView) []*wasmorchv1.InstanceView {
	return append([]*wasmorchv1.InstanceView{inst("hello-a", 1, running, nil), inst("hello-b", 1, running, nil),
		inst("hello-c", 1, running, nil), inst("hello-d", 1, running, nil)}, more...)
}

func TestRolloutStopsWaitingAtACanaryThatWaitsForPromotion(t *testing.T) {
	for _, tc := range []struct {
		name      string
		w         *wasmorchv1.WorkloadView
		instances []*wasmorchv1.InstanceView
		held      bool
		summary   string
	}{
		{
			name:      "a canary that is starting",
			w:         canaryView("25%", 0, 1),
			instances: fourOld(inst("hello-e", 2, starting, nil)),
			summary:   "hello: canary of generation 2 0/1 ready (25% of traffic), 4 of the previous generation serving the rest (instance hello-e is Starting)",
		},
		{
			name:      "a ready canary waits for promotion",
			w:         canaryView("25%", 0, 1),
			instances: fourOld(inst("hello-e", 2, running, nil)),
			held:      true,
			summary:   "hello: canary of generation 2 1/1 ready (25% of traffic), 4 of the previous generation serving the rest",
		},
		{
			name:      "a ready canary with a duration is followed on",
			w:         canaryView("25%", 60000, 1),
			instances: fourOld(inst("hello-e", 2, running, nil)),
			summary:   "hello: canary of generation 2 1/1 ready (25% of traffic), 4 of the previous generation serving the rest; promoted once ready for 1m0s",
		},
		{
			name:      "promoted: the rolling update",
			w:         canaryView("25%", 0, 2),
			instances: fourOld(inst("hello-e", 2, running, nil)),
			summary:   "hello: 1/4 ready, 4 of the previous generation still running (1 of 4 instances created)",
		},
		{
			name:      "no older instance: no canary phase",
			w:         canaryView("25%", 0, 1),
			instances: []*wasmorchv1.InstanceView{inst("hello-e", 2, running, nil)},
			summary:   "hello: 1/4 ready (1 of 4 instances created)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := assessed(tc.w, tc.instances)
			if got := r.held() != nil; got != tc.held {
				t.Errorf("held() = %v, want %v", r.held(), tc.held)
			}
			if r.done() {
				t.Errorf("done() with old instances left")
			}
			if got := r.summary("hello"); got != tc.summary {
				t.Errorf("summary = %q\nwant      %q", got, tc.summary)
			}
		})
	}
	c := assessed(canaryView("10%", 0, 1), fourOld(inst("hello-e", 2, running, nil))).held()
	want := "app: canary of generation 2 ready (1 replica, 10% of traffic); promote with 'wasmorch rollout promote app' or roll back with 'wasmorch rollout undo app'"
	if got := c.Summary("app"); got != want {
		t.Errorf("Summary = %q\nwant      %q", got, want)
	}
}

func TestDeployRejectsBadCanaryFlagsWithoutTheNetwork(t *testing.T) {
	c, err := Dial(closedPort(t), "deploy")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fn := FunctionConfig{Route: "/greet"}
	for _, tc := range []struct {
		cfg  DeployConfig
		want string
	}{
		{DeployConfig{Function: fn, Canary: "0%"}, `invalid --canary: "0%" is outside 1%..99%; `},
		{DeployConfig{Function: fn, Canary: "150%"}, `invalid --canary: "150%" is outside 1%..99%; `},
		{DeployConfig{Function: fn, Canary: "abc"}, `invalid --canary: "abc" is not a percentage`},
		{DeployConfig{Function: fn, Canary: "10"}, `invalid --canary: "10" is not a percentage: write it with %, e.g. 10%`},
		{DeployConfig{Canary: "10%"}, "--canary is only for HTTP functions"},
		{DeployConfig{Function: fn, CanaryDuration: time.Minute}, "--canary-duration needs --canary"},
		{DeployConfig{Function: fn, Canary: "10%", CanaryDuration: -time.Second}, "invalid --canary-duration -1s"},
	} {
		tc.cfg.File, tc.cfg.Replicas = "../../testdata/greet.wasm", 4
		_, err := c.Deploy(context.Background(), tc.cfg, nil)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "; ") {
			t.Errorf("Deploy(--canary %q --canary-duration %s) = %v, want one line starting %q", tc.cfg.Canary, tc.cfg.CanaryDuration, err, tc.want)
		}
	}
}

func TestManifestCanaryFieldsBecomeTheDeploysFlags(t *testing.T) {
	src := `apiVersion: wasmorch.dev/v1
kind: Workload
metadata: {name: greet}
spec:
  module: greet.wasm
  replicas: 4
  http: {route: /greet}
  canary: 25%
  canaryDuration: 5m
`
	objs, err := manifest.Parse("m.yaml", strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	cfg := WorkloadConfig(objs[0], "dir")
	if cfg.Canary != "25%" || cfg.CanaryDuration != 5*time.Minute {
		t.Fatalf("canary %q, duration %s; want 25%% and 5m", cfg.Canary, cfg.CanaryDuration)
	}
	_, spec, err := cfg.request()
	if err != nil || spec.GetCanary() != "25%" || spec.GetCanaryDurationMs() != 300000 {
		t.Fatalf("spec %v, %v; want canary 25%% for 300000ms", spec, err)
	}
}

func TestRolloutTimeoutDuringACanarySaysItWaitsForItsDuration(t *testing.T) {
	r := assessed(canaryView("25%", 300000, 1), fourOld(inst("hello-e", 2, running, nil)))
	err := r.timeoutError("hello", 2*time.Minute, nil)
	want := "workload hello is not ready after 2m0s: 1/4 ready; its canary is ready and is promoted once ready for 5m0s; see "
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("timeoutError = %v, want it to start %q", err, want)
	}
}
