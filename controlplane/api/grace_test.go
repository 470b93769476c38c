package api

import (
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestANodesLostAfterLabelIsItsGrace: a node's liveness lease lasts the
// cluster's node grace, or its wasmorch.io/lost-after label when it has
// one (a node on a flaky link); a label set or removed by an admin takes
// effect at the node's next heartbeat, and a label that is not a duration
// in range is refused.
func TestANodesLostAfterLabelIsItsGrace(t *testing.T) {
	w := newSessionWorld(t)
	control := &controlAPI{s: w.s}
	beatTTL := func() int64 {
		t.Helper()
		if _, err := w.api.Heartbeat(w.ctx, &v1.HeartbeatRequest{Node: "n1"}); err != nil {
			t.Fatal(err)
		}
		resp, err := w.s.store.Client.Get(w.ctx, store.AlivePrefix+"n1")
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("alive key of n1: %v, %v", resp, err)
		}
		ttl, err := w.s.store.Client.TimeToLive(w.ctx, clientv3.LeaseID(resp.Kvs[0].Lease))
		if err != nil {
			t.Fatal(err)
		}
		return ttl.GrantedTTL
	}
	label := func(set map[string]string, remove ...string) error {
		t.Helper()
		_, err := control.LabelNode(w.ctx, &v1.LabelNodeRequest{Name: "n1", Set: set, Remove: remove})
		if err == nil {
			err = w.s.cache.Sync(w.ctx)
		}
		return err
	}

	if ttl := beatTTL(); ttl != 2 {
		t.Fatalf("lease TTL %d s without the label, want the node grace, 2 s", ttl)
	}
	if err := label(map[string]string{workloads.LostAfterLabel: "45s"}); err != nil {
		t.Fatal(err)
	}
	if ttl := beatTTL(); ttl != 45 {
		t.Fatalf("lease TTL %d s with %s=45s, want 45 s", ttl, workloads.LostAfterLabel)
	}
	if ttl := beatTTL(); ttl != 45 {
		t.Fatalf("lease TTL %d s at the next heartbeat, want 45 s kept", ttl)
	}
	if err := label(nil, workloads.LostAfterLabel); err != nil {
		t.Fatal(err)
	}
	if ttl := beatTTL(); ttl != 2 {
		t.Fatalf("lease TTL %d s once the label is removed, want 2 s", ttl)
	}
	for _, bad := range []string{"soon", "500ms", "25h", "-1m"} {
		if err := label(map[string]string{workloads.LostAfterLabel: bad}); err == nil {
			t.Errorf("%s=%s was accepted", workloads.LostAfterLabel, bad)
		}
	}
	if ttl := beatTTL(); ttl != 2 {
		t.Fatalf("lease TTL %d s after refused labels, want 2 s", ttl)
	}
}
