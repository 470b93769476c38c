package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func TestRolloutBoundsRoundLikeKubernetes(t *testing.T) {
	tests := []struct {
		replicas               int32
		surge, unavailable     string
		wantSurge, wantUnavail int
	}{
		{4, "", "", 1, 1},    // 25% of 4
		{10, "", "", 3, 2},   // surge 2.5 up, unavailable 2.5 down
		{1, "", "", 1, 0},    // 0.25: surge up to 1, unavailable down to 0
		{3, "0", "", 0, 1},   // unavailable 0.75 rounds down to 0, surge 0: both 0, so 1
		{3, "0", "0%", 0, 1}, // likewise
		{5, "2", "100%", 2, 5},
		{2, "50%", "3", 1, 2}, // unavailable capped at replicas
		{0, "", "", 0, 1},
	}
	for _, tc := range tests {
		s, u := workloads.RolloutBounds(&v1.WorkloadSpec{Replicas: tc.replicas, MaxSurge: tc.surge, MaxUnavailable: tc.unavailable})
		if s != tc.wantSurge || u != tc.wantUnavail {
			t.Errorf("replicas %d surge %q unavailable %q: got %d/%d, want %d/%d", tc.replicas, tc.surge, tc.unavailable, s, u, tc.wantSurge, tc.wantUnavail)
		}
	}
}

// rolloutNode registers a node over the agent protocol, heartbeats, and
// records every assignment set it is sent.
type rolloutNode struct {
	mu   sync.Mutex
	last *v1.Assignments
}

func startRolloutNode(ctx context.Context, t *testing.T, c *cluster, name string, onSet func(*v1.Assignments)) *rolloutNode {
	t.Helper()
	if _, err := c.agent.Register(ctx, &v1.RegisterRequest{Node: &v1.Node{
		Name: name, Address: "127.0.0.1:1", Arch: "amd64", Os: "linux", Runtimes: []string{"wasm"},
		Capacity: &v1.Resources{MemoryBytes: 1 << 30, Instances: 100},
	}}); err != nil {
		t.Fatal(err)
	}
	session, err := c.agent.Session(ctx, &v1.SessionRequest{Node: name})
	if err != nil {
		t.Fatal(err)
	}
	n := &rolloutNode{}
	go func() {
		for {
			set, err := session.Recv()
			if err != nil {
				return
			}
			onSet(set)
			n.mu.Lock()
			n.last = set
			n.mu.Unlock()
			// A worker stops what its set marks terminating, and says so.
			reportTerminatingStopped(ctx, c, name, set)
		}
	}()
	go func() {
		for ctx.Err() == nil {
			_, _ = c.agent.Heartbeat(ctx, &v1.HeartbeatRequest{Node: name})
			time.Sleep(200 * time.Millisecond)
		}
	}()
	return n
}

func (n *rolloutNode) current() *v1.Assignments {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.last
}

// countGen counts the instances of generation gen in set, leaving out
// those marked terminating.
func countGen(set *v1.Assignments, gen int64) (n int) {
	for _, inst := range set.GetInstances() {
		if inst.GetGeneration() == gen && inst.GetTerminatingUnixNano() == 0 {
			n++
		}
	}
	return n
}

// TestRollingUpdateRespectsSurgeAndUnavailable rolls 4 replicas with max
// surge 1 and max unavailable 1 against a real control plane, making the
// new instances ready one at a time: every set the node is ever sent
// holds at most 5 instances and at least 3 that are ready, and each step
// is the one the arithmetic predicts.
func TestRollingUpdateRespectsSurgeAndUnavailable(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	digest := uploadModule(ctx, t, c, "hello.wasm")
	var (
		mu        sync.Mutex
		readyNew  = map[string]bool{} // new-generation instances reported running
		violation string
	)
	node := startRolloutNode(ctx, t, c, "n1", func(set *v1.Assignments) {
		mu.Lock()
		defer mu.Unlock()
		old := countGen(set, 1)
		// Those terminating still run: they count.
		if len(set.GetInstances()) > 5 {
			violation = fmt.Sprintf("a set of %d instances (terminating ones included) exceeds replicas+surge 5", len(set.GetInstances()))
		}
		// Old instances are all running; readyNew counts every new one
		// reported so far (at least those ready when the set was made).
		if countGen(set, 2) > 0 && old+len(readyNew) < 3 {
			violation = fmt.Sprintf("a set with %d old instances and %d ready new ones is below replicas-unavailable 3", old, len(readyNew))
		}
	})
	spec := &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 4, MaxSurge: "1", MaxUnavailable: "1", Env: []*v1.EnvVar{{Name: "V", Value: "1"}}}
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "app", Spec: spec}); err != nil {
		t.Fatal(err)
	}
	report := func(ids ...string) {
		t.Helper()
		var sts []*v1.InstanceStatus
		for _, id := range ids {
			sts = append(sts, &v1.InstanceStatus{Id: id, State: v1.InstanceState_INSTANCE_STATE_RUNNING})
		}
		if _, err := c.agent.ReportStatus(ctx, &v1.StatusBatch{Node: "n1", Statuses: sts}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "4 instances of generation 1 assigned", func() (bool, string) {
		s := node.current()
		return countGen(s, 1) == 4, s.String()
	})
	var ids []string
	for _, inst := range node.current().GetInstances() {
		ids = append(ids, inst.GetId())
	}
	report(ids...)
	eventually(t, "4/4 ready", func() (bool, string) {
		v, err := c.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: "app"})
		return err == nil && v.GetReady() == 4, v.String()
	})

	spec.Env[0].Value = "2"
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "app", Spec: spec}); err != nil {
		t.Fatal(err)
	}
	// Ready new r -> old max(0, 3-r), new min(4, 2+r).
	for r := 0; r <= 4; r++ {
		wantOld, wantNew := max(0, 3-r), min(4, 2+r)
		eventually(t, fmt.Sprintf("step %d: %d old and %d new", r, wantOld, wantNew), func() (bool, string) {
			s := node.current()
			return countGen(s, 1) == wantOld && countGen(s, 2) == wantNew, s.String()
		})
		if r == 4 {
			break
		}
		var next string
		mu.Lock()
		for _, inst := range node.current().GetInstances() {
			if inst.GetGeneration() == 2 && !readyNew[inst.GetId()] && next == "" {
				next = inst.GetId()
				readyNew[next] = true
			}
		}
		mu.Unlock()
		report(next)
	}
	// Each step is an event, and so is the end (observe).
	eventually(t, "the rollout's steps and its end recorded as events", func() (bool, string) {
		evs, err := c.control.ListEvents(ctx, &v1.ListEventsRequest{Object: "workload/app"})
		if err != nil {
			return false, err.Error()
		}
		steps, complete := 0, 0
		for _, ev := range evs.GetEvents() {
			switch ev.GetReason() {
			case "RollingUpdate":
				steps++
			case "RolloutComplete":
				complete++
			}
		}
		return steps >= 3 && complete == 1, evs.String()
	})
	mu.Lock()
	defer mu.Unlock()
	if violation != "" {
		t.Fatal(violation)
	}
}

// TestRevisionsHistoryAndRollback: a revision per generation (not per
// replica change), pruned to the history limit, and a rollback that
// applies an old revision's spec as a new generation.
func TestRevisionsHistoryAndRollback(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	digest := uploadModule(ctx, t, c, "hello.wasm")
	apply := func(v string, replicas int32) *v1.Workload {
		t.Helper()
		resp, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "app", ChangeCause: "set V=" + v,
			Spec: &v1.WorkloadSpec{ModuleDigest: digest, Replicas: replicas, Env: []*v1.EnvVar{{Name: "V", Value: v}}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetWorkload()
	}
	history := func() (gens []int64, causes []string) {
		t.Helper()
		l, err := c.control.ListRevisions(ctx, &v1.ListRevisionsRequest{Workload: "app"})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range l.GetRevisions() {
			gens, causes = append(gens, r.GetGeneration()), append(causes, r.GetChangeCause())
		}
		return gens, causes
	}
	apply("1", 1)
	apply("1", 3) // replicas only: no revision
	apply("2", 3)
	if gens, causes := history(); fmt.Sprint(gens) != "[1 2]" || fmt.Sprint(causes) != "[set V=1 set V=2]" {
		t.Fatalf("history %v %v; want generations [1 2]", gens, causes)
	}
	// Rollback to the previous revision: generation 3 with V=1.
	rb, err := c.control.RollbackWorkload(ctx, &v1.RollbackRequest{Workload: "app"})
	if err != nil {
		t.Fatal(err)
	}
	if g, env := rb.GetWorkload().GetGeneration(), rb.GetWorkload().GetSpec().GetEnv()[0].GetValue(); g != 3 || env != "1" || rb.GetWorkload().GetSpec().GetReplicas() != 3 {
		t.Fatalf("rollback made generation %d with V=%s; want 3 with V=1 and 3 replicas", g, env)
	}
	if _, causes := history(); causes[2] != "rollback to revision 1" {
		t.Fatalf("rollback's cause: %v", causes)
	}
	if _, err := c.control.RollbackWorkload(ctx, &v1.RollbackRequest{Workload: "app", ToGeneration: 7}); !errors.Is(errdefs.FromGRPC(err), errdefs.ErrNotFound) {
		t.Fatalf("rollback to a missing revision: %v", err)
	}
	// The history is kept to the limit (10): generations 4..13 are made,
	// 1..3 go.
	for i := 4; i <= 13; i++ {
		apply(fmt.Sprint(i), 3)
	}
	gens, _ := history()
	if len(gens) != workloads.DefaultRevisionHistoryLimit || gens[0] != 4 || gens[len(gens)-1] != 13 {
		t.Fatalf("history after 13 generations: %v; want 4..13", gens)
	}
	// A rollout that cannot move is refused.
	_, err = c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "app", Spec: &v1.WorkloadSpec{ModuleDigest: digest, MaxSurge: "0", MaxUnavailable: "0%"}})
	if !errors.Is(errdefs.FromGRPC(err), errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "both be 0") {
		t.Fatalf("surge 0 and unavailable 0: %v", err)
	}
	// Deleting the workload deletes its history; a namesake starts afresh.
	if _, err := c.control.DeleteWorkload(ctx, &v1.DeleteWorkloadRequest{Name: "app"}); err != nil {
		t.Fatal(err)
	}
	apply("x", 1)
	if gens, _ := history(); fmt.Sprint(gens) != "[1]" {
		t.Fatalf("history of a re-created workload: %v", gens)
	}
	// A config change rolls the workloads that use it: a revision too.
	if _, err := c.control.SetConfig(ctx, &v1.SetConfigRequest{Name: "cfg", Data: map[string]string{"A": "1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "app", Spec: &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 1, Configs: []string{"cfg"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.control.SetConfig(ctx, &v1.SetConfigRequest{Name: "cfg", Data: map[string]string{"A": "2"}}); err != nil {
		t.Fatal(err)
	}
	if gens, causes := history(); fmt.Sprint(gens) != "[1 2 3]" || causes[2] != "config cfg changed" {
		t.Fatalf("history after a config change: %v %q", gens, causes)
	}
}

// TestHealthChecksGateReadinessAndRollouts: a function replica its worker
// reports unhealthy no longer counts as ready, and a new revision whose
// replicas keep failing their health check is rolled back.
func TestHealthChecksGateReadinessAndRollouts(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	digest := uploadModule(ctx, t, c, "greet.wasm")
	node := startRolloutNode(ctx, t, c, "n1", func(*v1.Assignments) {})
	spec := &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 2, Http: &v1.HttpTrigger{Route: "/greet", HealthPath: "/healthz"},
		Env: []*v1.EnvVar{{Name: "V", Value: "1"}}}
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "fn", Spec: spec}); err != nil {
		t.Fatal(err)
	}
	report := func(sts ...*v1.InstanceStatus) {
		t.Helper()
		if _, err := c.agent.ReportStatus(ctx, &v1.StatusBatch{Node: "n1", Statuses: sts}); err != nil {
			t.Fatal(err)
		}
	}
	idsOf := func(gen int64) (ids []string) {
		for _, inst := range node.current().GetInstances() {
			if inst.GetGeneration() == gen {
				ids = append(ids, inst.GetId())
			}
		}
		return ids
	}
	eventually(t, "2 instances assigned", func() (bool, string) {
		return countGen(node.current(), 1) == 2, node.current().String()
	})
	old := idsOf(1)
	running := func(id string) *v1.InstanceStatus {
		return &v1.InstanceStatus{Id: id, State: v1.InstanceState_INSTANCE_STATE_RUNNING}
	}
	report(running(old[0]), running(old[1]))
	ready := func(want int32) {
		t.Helper()
		eventually(t, fmt.Sprintf("%d ready", want), func() (bool, string) {
			v, err := c.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: "fn"})
			return err == nil && v.GetReady() == want, v.String()
		})
	}
	ready(2)
	report(&v1.InstanceStatus{Id: old[1], State: v1.InstanceState_INSTANCE_STATE_RUNNING, Unhealthy: true, HealthFailures: 3,
		HealthMessage: "GET /greet/healthz: 503 Service Unavailable"})
	ready(1)
	event := func(reason, text string) {
		t.Helper()
		eventually(t, "a "+reason+" event", func() (bool, string) {
			evs, err := c.control.ListEvents(ctx, &v1.ListEventsRequest{Object: "workload/fn"})
			if err != nil {
				return false, err.Error()
			}
			for _, e := range evs.GetEvents() {
				if e.GetReason() == reason && strings.Contains(e.GetMessage(), text) {
					return true, ""
				}
			}
			return false, evs.String()
		})
	}
	event("Unhealthy", "instance "+old[1]+" on node n1 fails its health check (3 times in a row, last: GET /greet/healthz: 503 Service Unavailable)")
	report(running(old[1]))
	ready(2)
	event("Healthy", "instance "+old[1]+" on node n1 passes its health check again")

	spec.Env[0].Value = "2"
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "fn", Spec: spec}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a replica of generation 2", func() (bool, string) {
		return countGen(node.current(), 2) > 0, node.current().String()
	})
	for _, id := range idsOf(2) {
		report(&v1.InstanceStatus{Id: id, State: v1.InstanceState_INSTANCE_STATE_STARTING, HealthFailures: 3,
			HealthMessage: "GET /greet/healthz: 503 Service Unavailable: not ready"})
	}
	if cause := rolledBackAs(ctx, t, c, "fn", 3); !strings.Contains(cause, "automatic rollback to revision 1") ||
		!strings.Contains(cause, "fails its health check (3 times in a row, last: GET /greet/healthz: 503 Service Unavailable: not ready)") {
		t.Errorf("the rollback's change cause is %q", cause)
	}
	if n := countGen(node.current(), 1); n != 2 {
		t.Errorf("the old replicas were touched during the failed rollout: %d of generation 1 assigned, want 2", n)
	}
}

// uploadModule uploads a test module and returns its digest.
func uploadModule(ctx context.Context, t *testing.T, c *cluster, file string) string {
	t.Helper()
	mod := readModule(t, file)
	digest := blobs.Digest(mod)
	if err := upload(ctx, t, c.control, mod, digest); err != nil {
		t.Fatal(err)
	}
	return digest
}

// rolledBackAs waits until workload is at generation gen, an automatic
// rollback, and returns that revision's change cause.
func rolledBackAs(ctx context.Context, t *testing.T, c *cluster, workload string, gen int64) string {
	t.Helper()
	eventually(t, fmt.Sprintf("generation %d, an automatic rollback", gen), func() (bool, string) {
		v, err := c.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: workload})
		return err == nil && v.GetWorkload().GetGeneration() == gen, v.String()
	})
	l, err := c.control.ListRevisions(ctx, &v1.ListRevisionsRequest{Workload: workload})
	if err != nil {
		t.Fatal(err)
	}
	revs := l.GetRevisions()
	return revs[len(revs)-1].GetChangeCause()
}

// TestRolloutStuckPastTheProgressDeadlineIsRolledBack: a new generation
// whose instances their node never starts (no status ever comes) is rolled
// back once the progress deadline has passed since they were created.
func TestRolloutStuckPastTheProgressDeadlineIsRolledBack(t *testing.T) {
	c := startClusterWith(t, t.TempDir(), func(cfg *controlplane.Config) { cfg.ProgressDeadline = time.Second })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	digest := uploadModule(ctx, t, c, "hello.wasm")
	node := startRolloutNode(ctx, t, c, "n1", func(*v1.Assignments) {})
	spec := &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 2, Env: []*v1.EnvVar{{Name: "V", Value: "1"}}}
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "app", Spec: spec}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "2 instances assigned", func() (bool, string) {
		return countGen(node.current(), 1) == 2, node.current().String()
	})
	var sts []*v1.InstanceStatus
	for _, inst := range node.current().GetInstances() {
		sts = append(sts, &v1.InstanceStatus{Id: inst.GetId(), State: v1.InstanceState_INSTANCE_STATE_RUNNING})
	}
	if _, err := c.agent.ReportStatus(ctx, &v1.StatusBatch{Node: "n1", Statuses: sts}); err != nil {
		t.Fatal(err)
	}
	spec.Env[0].Value = "2"
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "app", Spec: spec}); err != nil {
		t.Fatal(err)
	}
	// The node never reports generation 2's instances.
	if cause := rolledBackAs(ctx, t, c, "app", 3); !strings.HasPrefix(cause, "automatic rollback to revision 1: instance app-") ||
		!strings.HasSuffix(cause, "was not started by node n1 within the progress deadline 1s") {
		t.Errorf("the rollback's change cause is %q", cause)
	}
}
