package controlplane_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestCanaryPromoteAndRollbackAgainstTheAPI: a function's canary waits
// for 'rollout promote' (the new generation gets 1 of 4 replicas beside
// the 4 old ones, and they stay until it is promoted), a rollback is
// written promoted, and what has no canary is refused.
func TestCanaryPromoteAndRollbackAgainstTheAPI(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	digest := uploadModule(ctx, t, c, "hello.wasm")
	node := startRolloutNode(ctx, t, c, "n1", func(*v1.Assignments) {})
	running := func(gen int64) {
		t.Helper()
		var sts []*v1.InstanceStatus
		for _, inst := range node.current().GetInstances() {
			if inst.GetGeneration() == gen {
				sts = append(sts, &v1.InstanceStatus{Id: inst.GetId(), State: v1.InstanceState_INSTANCE_STATE_RUNNING})
			}
		}
		if _, err := c.agent.ReportStatus(ctx, &v1.StatusBatch{Node: "n1", Statuses: sts}); err != nil {
			t.Fatal(err)
		}
	}
	spec := func(v, canary string) *v1.WorkloadSpec {
		return &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 4, Canary: canary, Http: &v1.HttpTrigger{Route: "/fn"},
			Env: []*v1.EnvVar{{Name: "V", Value: v}}}
	}
	apply := func(s *v1.WorkloadSpec) *v1.Workload {
		t.Helper()
		resp, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "fn", Spec: s})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetWorkload()
	}
	promote := func() (*v1.Workload, error) {
		return c.control.PromoteRollout(ctx, &v1.PromoteRolloutRequest{Workload: "fn"})
	}
	refused := func(what, want string) {
		t.Helper()
		_, err := promote()
		if !errors.Is(errdefs.FromGRPC(err), errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), want) {
			t.Fatalf("promote %s: %v; want FailedPrecondition containing %q", what, err, want)
		}
	}

	// A first deploy with a canary has none: nothing older to share with.
	if wl := apply(spec("1", "25%")); wl.GetPromotedGeneration() != 1 {
		t.Fatalf("first generation written with promoted generation %d, want 1", wl.GetPromotedGeneration())
	}
	refused("a first deploy", "already promoted")
	eventually(t, "4 instances of generation 1", func() (bool, string) {
		return countGen(node.current(), 1) == 4, node.current().String()
	})
	running(1)

	// Generation 2 with a 25% canary: 1 new beside the 4 old, ready.
	if wl := apply(spec("2", "25%")); wl.GetGeneration() != 2 || wl.GetPromotedGeneration() != 1 {
		t.Fatalf("generation 2: %v; want promoted generation 1", wl)
	}
	eventually(t, "a canary of 1 beside 4 old", func() (bool, string) {
		s := node.current()
		return countGen(s, 1) == 4 && countGen(s, 2) == 1, s.String()
	})
	running(2)
	// Changing only the canary's settings is no new generation.
	if wl := apply(spec("2", "50%")); wl.GetGeneration() != 2 {
		t.Fatalf("a canary change made generation %d", wl.GetGeneration())
	}
	eventually(t, "a canary of 2 beside 4 old", func() (bool, string) {
		s := node.current()
		return countGen(s, 1) == 4 && countGen(s, 2) == 2, s.String()
	})
	running(2)

	wl, err := promote()
	if err != nil || wl.GetPromotedGeneration() != 2 {
		t.Fatalf("promote: %v, %v", wl, err)
	}
	refused("twice", "generation 2 is already promoted")
	eventually(t, "generation 1 replaced", func() (bool, string) {
		running(2)
		s := node.current()
		return countGen(s, 1) == 0 && countGen(s, 2) == 4, s.String()
	})
	evs, err := c.control.ListEvents(ctx, &v1.ListEventsRequest{Object: "workload/fn"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(evs.String(), "CanaryPromoted") {
		t.Errorf("no CanaryPromoted event: %v", evs)
	}

	// Generation 3 waits as a canary; undo writes generation 4 promoted.
	apply(spec("3", "25%"))
	eventually(t, "a canary of generation 3", func() (bool, string) {
		return countGen(node.current(), 3) == 1, node.current().String()
	})
	rb, err := c.control.RollbackWorkload(ctx, &v1.RollbackRequest{Workload: "fn"})
	if err != nil {
		t.Fatal(err)
	}
	if g := rb.GetWorkload().GetGeneration(); g != 4 || rb.GetWorkload().GetPromotedGeneration() != 4 {
		t.Fatalf("rollback: %v; want generation 4, promoted", rb.GetWorkload())
	}
	refused("after a rollback", "already promoted")
	eventually(t, "generation 4 rolled out", func() (bool, string) {
		running(4)
		s := node.current()
		return len(s.GetInstances()) == 4 && countGen(s, 4) == 4, s.String()
	})

	// A canary that crash-loops is rolled back automatically, as
	// generation 6, promoted: it rolls out without waiting.
	apply(spec("5", "25%"))
	var canaryID string
	eventually(t, "a canary of generation 5", func() (bool, string) {
		for _, inst := range node.current().GetInstances() {
			if inst.GetGeneration() == 5 {
				canaryID = inst.GetId()
			}
		}
		return canaryID != "", node.current().String()
	})
	if _, err := c.agent.ReportStatus(ctx, &v1.StatusBatch{Node: "n1", Statuses: []*v1.InstanceStatus{{Id: canaryID,
		State: v1.InstanceState_INSTANCE_STATE_STARTING, Restarts: 3, Reason: "Error", Exited: true, ExitCode: 1}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "generation 6, an automatic rollback, promoted", func() (bool, string) {
		v, err := c.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: "fn"})
		wl := v.GetWorkload()
		return err == nil && wl.GetGeneration() == 6 && wl.GetPromotedGeneration() == 6 && wl.GetSpec().GetEnv()[0].GetValue() == "2", v.String()
	})
	eventually(t, "generation 6 rolled out", func() (bool, string) {
		running(6)
		s := node.current()
		return len(s.GetInstances()) == 4 && countGen(s, 6) == 4, s.String()
	})

	// Without a canary setting.
	apply(spec("7", ""))
	refused("without a canary", "not deployed with a canary")
	if _, err := c.control.PromoteRollout(ctx, &v1.PromoteRolloutRequest{Workload: "nope"}); !errors.Is(errdefs.FromGRPC(err), errdefs.ErrNotFound) {
		t.Fatalf("promote a missing workload: %v", err)
	}
	// A canary needs a function.
	_, err = c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "cmd", Spec: &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 1, Canary: "10%"}})
	if !errors.Is(errdefs.FromGRPC(err), errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "no HTTP route") {
		t.Fatalf("a canary on a command: %v", err)
	}
}
