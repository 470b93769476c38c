package controlplane_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestTCPPortsAtApply: a plain TCP service's node port is the cluster's.
// A second workload on it is refused in one line and nothing is stored;
// two deploys of one port lined up after both have checked it: one wins;
// the port is free again once its holder moves or is deleted. A service
// (route or --tcp) whose module does not import sock_accept is refused
// by the API itself, as a client other than the CLI would send it.
func TestTCPPortsAtApply(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	server := uploadModule(ctx, t, c, "cserver.wasm")
	hello := uploadModule(ctx, t, c, "hello.wasm")
	tcp := func(port int32) *v1.WorkloadSpec {
		return &v1.WorkloadSpec{Kind: "wasm", ModuleDigest: server, Replicas: 0, Port: port, Tcp: true}
	}
	apply := func(name string, spec *v1.WorkloadSpec) error {
		_, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: name, Spec: spec})
		return errdefs.FromGRPC(err)
	}
	stored := func() []string {
		t.Helper()
		l, err := c.control.ListWorkloads(ctx, &v1.ListWorkloadsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, w := range l.GetWorkloads() {
			names = append(names, w.GetWorkload().GetName())
		}
		return names
	}

	for _, tc := range []struct {
		name string
		spec *v1.WorkloadSpec
		want string
	}{
		{"cgi-tcp", &v1.WorkloadSpec{Kind: "wasm", ModuleDigest: hello, Port: 7000, Tcp: true},
			"port 7000: module " + hello + " does not import wasi_snapshot_preview1.sock_accept, so it cannot accept connections on a listener"},
		{"cgi-routed", &v1.WorkloadSpec{Kind: "wasm", ModuleDigest: hello, Port: 8080, Http: &v1.HttpTrigger{Route: "/cgi"}},
			"port 8080: module " + hello + " does not import wasi_snapshot_preview1.sock_accept"},
	} {
		err := apply(tc.name, tc.spec)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v; want one line saying %q", tc.name, err, tc.want)
		}
	}
	if err := apply("cgi", &v1.WorkloadSpec{Kind: "wasm", ModuleDigest: hello, Http: &v1.HttpTrigger{Route: "/cgi"}}); err != nil {
		t.Errorf("the same module as a CGI function: %v", err)
	}

	if err := apply("plain", tcp(9000)); err != nil {
		t.Fatal(err)
	}
	if err := apply("plain", tcp(9000)); err != nil {
		t.Fatalf("plain redeployed on its own port: %v", err)
	}
	err := apply("other", tcp(9000))
	if want := "port 9000 is already served by workload plain (--tcp): choose another --port, or delete plain first"; !errdefs.IsFailedPrecondition(err) || err.Error() != want {
		t.Fatalf("a second workload on 9000: %v; want %q", err, want)
	}
	if got := fmt.Sprint(stored()); got != "[cgi plain]" {
		t.Fatalf("stored %s after the refusals; want [cgi plain]", got)
	}

	// Lined up after both checked the port (the cache), before either
	// writes: the claim settles it.
	var arrived atomic.Int32
	both := make(chan struct{})
	controlplane.SetRouteCheckedHook(c.srv, func() {
		switch arrived.Add(1) {
		case 1:
			select {
			case <-both:
			case <-time.After(10 * time.Second): // a safety net, not a timing assertion
			}
		case 2:
			close(both)
		}
	})
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, name := range []string{"tcp-a", "tcp-b"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = apply(name, tcp(9100))
		}()
	}
	wg.Wait()
	controlplane.SetRouteCheckedHook(c.srv, nil)
	if arrived.Load() < 2 {
		t.Fatalf("the two deploys were not lined up (%d checks)", arrived.Load())
	}
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "port 9100 is already served by workload tcp-"):
			t.Errorf("the loser's error: %v", err)
		}
	}
	if won != 1 {
		t.Fatalf("simultaneous deploys of one port: %d succeeded (%v); want one", won, errs)
	}

	// Moving plain to 9001 frees 9000; deleting it frees 9001.
	if err := apply("plain", tcp(9001)); err != nil {
		t.Fatal(err)
	}
	if err := apply("other", tcp(9000)); err != nil {
		t.Fatalf("9000 was freed by the move, yet: %v", err)
	}
	if _, err := c.control.DeleteWorkload(ctx, &v1.DeleteWorkloadRequest{Name: "plain"}); err != nil {
		t.Fatal(err)
	}
	if err := apply("third", tcp(9001)); err != nil {
		t.Fatalf("9001 was freed by the delete, yet: %v", err)
	}
}

// TestTCPServiceOnePerNodeAndRolloutInPlace: two replicas of a plain TCP
// service on two nodes go one to each; a third waits, saying that the
// port is in use on both. A `rollout restart` replaces them in place
// (the old instance stopped, then the new one started where it was):
// no node is ever sent two instances that serve on the port, and the
// rollout completes. A drain of one node, the other holding the port,
// leaves its instance running while its replacement waits.
func TestTCPServiceOnePerNodeAndRolloutInPlace(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	digest := uploadModule(ctx, t, c, "cserver.wasm")
	var (
		mu        sync.Mutex
		violation string
	)
	nodes := map[string]*rolloutNode{}
	for _, name := range []string{"n1", "n2"} {
		nodes[name] = startRolloutNode(ctx, t, c, name, func(set *v1.Assignments) {
			// A worker runs what it is given: every instance not
			// terminating is reported running.
			batch := &v1.StatusBatch{Node: name}
			svc := 0
			for _, inst := range set.GetInstances() {
				if inst.GetWorkload() == "svc" {
					svc++
				}
				if inst.GetTerminatingUnixNano() == 0 {
					batch.Statuses = append(batch.Statuses, &v1.InstanceStatus{Id: inst.GetId(), State: v1.InstanceState_INSTANCE_STATE_RUNNING})
				}
			}
			mu.Lock()
			if svc > 1 && violation == "" {
				violation = fmt.Sprintf("node %s was sent %d instances of svc (terminating ones included), which serve on one port: %v", name, svc, set)
			}
			mu.Unlock()
			if len(batch.Statuses) > 0 {
				_, _ = c.agent.ReportStatus(ctx, batch)
			}
		})
	}
	spec := &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 2, Port: 9000, Tcp: true}
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "svc", Spec: spec}); err != nil {
		t.Fatal(err)
	}
	onePerNode := func(gen int64) (bool, string) {
		s1, s2 := nodes["n1"].current(), nodes["n2"].current()
		return countGen(s1, gen) == 1 && countGen(s2, gen) == 1 && len(s1.GetInstances()) == 1 && len(s2.GetInstances()) == 1,
			fmt.Sprintf("n1: %v\nn2: %v", s1, s2)
	}
	eventually(t, "one instance of generation 1 on each node", func() (bool, string) { return onePerNode(1) })
	eventually(t, "2/2 ready", func() (bool, string) {
		v, err := c.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: "svc"})
		return err == nil && v.GetReady() == 2, v.String()
	})

	if _, err := c.control.ScaleWorkload(ctx, &v1.ScaleRequest{Name: "svc", Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the third replica waits, saying why", func() (bool, string) {
		l, err := c.control.ListInstances(ctx, &v1.ListInstancesRequest{Workload: "svc", States: []v1.InstanceState{v1.InstanceState_INSTANCE_STATE_PENDING}})
		if err != nil {
			return false, err.Error()
		}
		is := l.GetInstances()
		return len(is) == 1 && is[0].GetInstance().GetPendingReason() == "0/2 nodes fit: 2 port 9000 in use", l.String()
	})
	if _, err := c.control.ScaleWorkload(ctx, &v1.ScaleRequest{Name: "svc", Replicas: 2}); err != nil {
		t.Fatal(err)
	}

	if _, err := c.control.RestartRollout(ctx, &v1.RestartRolloutRequest{Workload: "svc"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the rollout restart replaced both in place", func() (bool, string) { return onePerNode(2) })
	eventually(t, "2/2 ready and up to date", func() (bool, string) {
		v, err := c.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: "svc"})
		return err == nil && v.GetReady() == 2 && v.GetCurrent() == 2 && v.GetTotal() == 2, v.String()
	})

	// Draining n1 when n2 holds the port: the replacement waits, saying
	// why, and n1's instance keeps running until it can run elsewhere.
	if _, err := c.control.DrainNode(ctx, &v1.NodeRequest{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the replacement of n1's instance waits, saying why", func() (bool, string) {
		l, err := c.control.ListInstances(ctx, &v1.ListInstancesRequest{Workload: "svc", States: []v1.InstanceState{v1.InstanceState_INSTANCE_STATE_PENDING}})
		if err != nil {
			return false, err.Error()
		}
		is := l.GetInstances()
		return len(is) == 1 && is[0].GetInstance().GetPendingReason() == "0/2 nodes fit: 1 cordoned, 1 port 9000 in use", l.String()
	})
	if set := nodes["n1"].current(); countGen(set, 2) != 1 {
		t.Errorf("n1's instance was stopped with nowhere for its replacement to run: %v", set)
	}
	mu.Lock()
	defer mu.Unlock()
	if violation != "" {
		t.Fatal(violation)
	}
}

// TestRollbackToAPortTakenSinceIsRefused: a TCP service moved from port
// 9000 to 9001 whose new generation crash-loops cannot go back to 9000
// once another workload serves there: the rollback is refused with an
// event saying why (once), the workload is still reconciled, and the
// rollback happens once 9000 is free again.
func TestRollbackToAPortTakenSinceIsRefused(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	digest := uploadModule(ctx, t, c, "cserver.wasm")
	var crashing atomic.Bool // generation 2's instances report restarts
	report := func(node string, set *v1.Assignments) {
		batch := &v1.StatusBatch{Node: node}
		for _, inst := range set.GetInstances() {
			if inst.GetTerminatingUnixNano() != 0 {
				continue
			}
			st := &v1.InstanceStatus{Id: inst.GetId(), State: v1.InstanceState_INSTANCE_STATE_RUNNING}
			if inst.GetGeneration() == 2 && crashing.Load() {
				st.Restarts, st.Reason = 5, "Error"
			}
			batch.Statuses = append(batch.Statuses, st)
		}
		if len(batch.Statuses) > 0 {
			_, _ = c.agent.ReportStatus(ctx, batch)
		}
	}
	nodes := map[string]*rolloutNode{}
	for _, name := range []string{"n1", "n2"} {
		nodes[name] = startRolloutNode(ctx, t, c, name, func(set *v1.Assignments) { report(name, set) })
	}
	apply := func(name string, port int32, replicas int32) error {
		_, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: name,
			Spec: &v1.WorkloadSpec{ModuleDigest: digest, Replicas: replicas, Port: port, Tcp: true}})
		return err
	}
	if err := apply("svc", 9000, 2); err != nil {
		t.Fatal(err)
	}
	eventually(t, "2/2 ready", func() (bool, string) {
		v, err := c.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: "svc"})
		return err == nil && v.GetReady() == 2, v.String()
	})
	if err := apply("svc", 9001, 2); err != nil {
		t.Fatal(err)
	}
	if err := apply("other", 9000, 0); err != nil {
		t.Fatalf("9000 left by svc: %v", err)
	}
	crashing.Store(true)
	// The first new instance replaces an old one in place; its node
	// reports it crash-looping.
	eventually(t, "generation 2 crash-loops and its rollback is refused", func() (bool, string) {
		for _, n := range nodes {
			if set := n.current(); countGen(set, 2) > 0 {
				report("n1", nodes["n1"].current())
				report("n2", nodes["n2"].current())
				break
			}
		}
		evs, err := c.control.ListEvents(ctx, &v1.ListEventsRequest{Object: "workload/svc"})
		if err != nil {
			return false, err.Error()
		}
		refused := 0
		for _, e := range evs.GetEvents() {
			if e.GetReason() == "RollbackRefused" && strings.Contains(e.GetMessage(), "generation 2 failed (instance svc-") &&
				strings.Contains(e.GetMessage(), "cannot be rolled back to revision 1: port 9000 is already served by workload other") {
				refused++
			}
		}
		return refused == 1, evs.String()
	})
	if v, err := c.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: "svc"}); err != nil || v.GetWorkload().GetGeneration() != 2 {
		t.Fatalf("svc after the refused rollback: %v, %v; want generation 2", v, err)
	}

	if _, err := c.control.DeleteWorkload(ctx, &v1.DeleteWorkloadRequest{Name: "other"}); err != nil {
		t.Fatal(err)
	}
	report("n1", nodes["n1"].current())
	report("n2", nodes["n2"].current())
	if cause := rolledBackAs(ctx, t, c, "svc", 3); !strings.Contains(cause, "automatic rollback to revision 1") {
		t.Errorf("the rollback's change cause is %q", cause)
	}
	v, err := c.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: "svc"})
	if err != nil || v.GetWorkload().GetSpec().GetPort() != 9000 {
		t.Fatalf("svc rolled back: %v, %v; want port 9000", v, err)
	}
}
