package workloads

import (
	"context"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/etcdtest"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestClaimPort: a plain TCP service's node port is claimed with the
// workload that serves on it, kept across its redeploys, moved when its
// port changes, released when it drops --tcp; another workload's claim is
// refused while that workload serves on the port, taken over once it no
// longer does; of two claims computed at once, one commits.
func TestClaimPort(t *testing.T) {
	ctx := context.Background()
	st := store.New(etcdtest.Start(t))
	tcp := func(port int32) *v1.WorkloadSpec { return &v1.WorkloadSpec{Kind: "wasm", Port: port, Tcp: true} }
	// write stores workload name with spec (prev: its spec until now) as
	// the API does, and says whether the transaction committed.
	write := func(name string, spec, prev *v1.WorkloadSpec) (bool, error) {
		t.Helper()
		cmps, ops, err := ClaimPort(ctx, st, name, spec, prev)
		if err != nil {
			return false, err
		}
		put, err := st.Workloads.PutOp(name, &v1.Workload{Name: name, Spec: spec})
		if err != nil {
			t.Fatal(err)
		}
		resp, err := st.Client.Txn(ctx).If(cmps...).Then(append(ops, put)...).Commit()
		if err != nil {
			t.Fatal(err)
		}
		return resp.Succeeded, nil
	}
	holder := func(port int32) string {
		t.Helper()
		resp, err := st.Client.Get(ctx, PortClaimKey(port))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return ""
		}
		return string(resp.Kvs[0].Value)
	}

	if ok, err := write("a", tcp(9000), nil); !ok || err != nil {
		t.Fatalf("a claims 9000: %v, %v", ok, err)
	}
	if ok, err := write("a", tcp(9000), tcp(9000)); !ok || err != nil || holder(9000) != "a" {
		t.Fatalf("a redeployed on 9000: %v, %v, held by %q", ok, err, holder(9000))
	}
	_, err := write("b", tcp(9000), nil)
	if !errdefs.IsFailedPrecondition(err) || err.Error() != "port 9000 is already served by workload a (--tcp): choose another --port, or delete a first" {
		t.Fatalf("b claims a's 9000: %v", err)
	}
	if ok, err := write("a", tcp(9001), tcp(9000)); !ok || err != nil || holder(9000) != "" || holder(9001) != "a" {
		t.Fatalf("a moved to 9001: %v, %v; 9000 held by %q, 9001 by %q", ok, err, holder(9000), holder(9001))
	}
	if ok, err := write("b", tcp(9000), nil); !ok || err != nil {
		t.Fatalf("b claims the 9000 a left: %v, %v", ok, err)
	}
	routed := &v1.WorkloadSpec{Kind: "wasm", Port: 9001, Http: &v1.HttpTrigger{Route: "/a"}}
	if ok, err := write("a", routed, tcp(9001)); !ok || err != nil || holder(9001) != "" {
		t.Fatalf("a behind a route now: %v, %v; 9001 held by %q", ok, err, holder(9001))
	}
	// A claim whose workload no longer serves on the port (written by a
	// workload since changed without releasing it) is taken over.
	if _, err := st.Client.Put(ctx, PortClaimKey(9002), "a"); err != nil {
		t.Fatal(err)
	}
	if ok, err := write("c", tcp(9002), nil); !ok || err != nil || holder(9002) != "c" {
		t.Fatalf("c claims the 9002 a left behind: %v, %v, held by %q", ok, err, holder(9002))
	}
	// Deleting releases, and only the holder's claim.
	if _, err := st.Client.Txn(ctx).Then(ReleasePortOp("a", 9002), ReleasePortOp("c", 9002), ReleasePortOp("c", 9000)).Commit(); err != nil {
		t.Fatal(err)
	}
	if holder(9002) != "" || holder(9000) != "b" {
		t.Fatalf("after releases: 9002 held by %q, 9000 by %q", holder(9002), holder(9000))
	}

	// Two claims of a free port computed before either writes: one wins.
	c1, o1, err1 := ClaimPort(ctx, st, "d", tcp(9003), nil)
	c2, o2, err2 := ClaimPort(ctx, st, "e", tcp(9003), nil)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	won := 0
	for _, txn := range []struct {
		cmps []clientv3.Cmp
		ops  []clientv3.Op
	}{{c1, o1}, {c2, o2}} {
		resp, err := st.Client.Txn(ctx).If(txn.cmps...).Then(txn.ops...).Commit()
		if err != nil {
			t.Fatal(err)
		}
		if resp.Succeeded {
			won++
		}
	}
	if won != 1 || holder(9003) != "d" {
		t.Fatalf("two claims at once: %d committed, 9003 held by %q; want one, d's", won, holder(9003))
	}
}

// TestRolloutBoundsOfATCPService: a plain TCP service never surges and
// replaces at least one instance at a time, whatever its settings; other
// workloads keep theirs.
func TestRolloutBoundsOfATCPService(t *testing.T) {
	tests := []struct {
		spec                   *v1.WorkloadSpec
		wantSurge, wantUnavail int
	}{
		{&v1.WorkloadSpec{Replicas: 2}, 1, 0},
		{&v1.WorkloadSpec{Replicas: 2, Port: 9000, Tcp: true}, 0, 1},
		{&v1.WorkloadSpec{Replicas: 1, Port: 9000, Tcp: true, MaxSurge: "1", MaxUnavailable: "0"}, 0, 1},
		{&v1.WorkloadSpec{Replicas: 8, Port: 9000, Tcp: true, MaxUnavailable: "50%"}, 0, 4},
		{&v1.WorkloadSpec{Replicas: 2, Port: 9000, Http: &v1.HttpTrigger{Route: "/s"}}, 1, 0},
	}
	for _, tc := range tests {
		if s, u := RolloutBounds(tc.spec); s != tc.wantSurge || u != tc.wantUnavail {
			t.Errorf("RolloutBounds(%v) = surge %d, unavailable %d; want %d, %d", tc.spec, s, u, tc.wantSurge, tc.wantUnavail)
		}
	}
}
