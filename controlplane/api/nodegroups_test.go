package api

import (
	"context"
	"errors"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestApplyNodeGroup: a NodeGroup is stored once it is valid and a
// provider of the member can make it; bad input is one line and stores
// nothing; applying it again changes nothing; a dry run says what would
// change and stores nothing; deleting one that still has nodes is refused
// unless a configured group takes its place.
func TestApplyNodeGroup(t *testing.T) {
	s := newTestServer(t, nil)
	s.SetNodeGroupHooks(func(g provider.NodeGroup) error {
		switch {
		case g.Provider != "local":
			return errors.New("node group " + g.Name + `: unknown provider "` + g.Provider + `" (known: local)`)
		case g.Template.Arch == "arm64":
			return errors.New("node group " + g.Name + ": provider local cannot make nodes of arch arm64")
		}
		return nil
	}, func(name string) bool { return name == "configured" })
	a := &controlAPI{s: s}
	ctx := context.Background()
	spec := func(name string, min, max int32, f func(*v1.NodeGroupSpec)) *v1.NodeGroupSpec {
		sp := &v1.NodeGroupSpec{Name: name, Provider: "local", MinSize: min, MaxSize: max, InstancesPerNode: 10}
		if f != nil {
			f(sp)
		}
		return sp
	}
	stored := func(name string) *v1.NodeGroupSpec {
		resp, err := s.store.Client.Get(ctx, nodeGroupSpecsPrefix+name)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return nil
		}
		sp := &v1.NodeGroupSpec{}
		if err := proto.Unmarshal(resp.Kvs[0].Value, sp); err != nil {
			t.Fatal(err)
		}
		return sp
	}

	for _, tc := range []struct {
		name string
		spec *v1.NodeGroupSpec
		want string
	}{
		{"min over max", spec("bad", 4, 3, nil), "node group bad: min 4 is more than max 3"},
		{"no instances", spec("bad", 0, 3, func(s *v1.NodeGroupSpec) { s.InstancesPerNode = 0 }), "instances per node 0 must be at least 1"},
		{"no provider", spec("bad", 0, 3, func(s *v1.NodeGroupSpec) { s.Provider = "" }), "provider is missing"},
		{"unknown provider", spec("bad", 0, 3, func(s *v1.NodeGroupSpec) { s.Provider = "aws" }), `unknown provider "aws"`},
		{"a template no provider can make", spec("bad", 0, 3, func(s *v1.NodeGroupSpec) { s.Arch = "arm64" }), "cannot make nodes of arch arm64"},
		{"a label of the provider's", spec("bad", 0, 3, func(s *v1.NodeGroupSpec) { s.Labels = map[string]string{"zone": "x"} }), "label zone is set by the provider"},
		{"a name that is not a DNS label", spec("Bad_Name", 0, 3, nil), "Bad_Name"},
	} {
		_, err := a.ApplyNodeGroup(ctx, &v1.NodeGroupApplyRequest{Spec: tc.spec})
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: apply = %v, want one invalid-argument line with %q", tc.name, err, tc.want)
		}
		if got := stored(tc.spec.GetName()); got != nil {
			t.Errorf("%s: stored %v", tc.name, got)
		}
	}

	resp, err := a.ApplyNodeGroup(ctx, &v1.NodeGroupApplyRequest{Spec: spec("pool", 0, 3, nil)})
	if err != nil || !resp.GetCreated() || stored("pool").GetMaxSize() != 3 {
		t.Fatalf("apply pool = %v, %v; stored %v", resp, err, stored("pool"))
	}
	if resp, err := a.ApplyNodeGroup(ctx, &v1.NodeGroupApplyRequest{Spec: spec("pool", 0, 3, nil)}); err != nil || resp.GetChanged() {
		t.Errorf("apply pool again = %v, %v; want unchanged", resp, err)
	}
	resp, err = a.ApplyNodeGroup(ctx, &v1.NodeGroupApplyRequest{Spec: spec("pool", 1, 5, nil), DryRun: true})
	if err != nil || !resp.GetChanged() || strings.Join(resp.GetChanges(), "; ") != "~ min: 0 -> 1; ~ max: 3 -> 5" || stored("pool").GetMaxSize() != 3 {
		t.Errorf("dry run = %v, %v; stored %v; want the changes said, nothing stored", resp, err, stored("pool"))
	}
	v, err := a.GetNodeGroup(ctx, &v1.NodeGroupGetRequest{Name: "pool"})
	if err != nil || v.GetSpec().GetMaxSize() != 3 || v.GetStatus() != nil {
		t.Errorf("get pool = %v, %v; want its spec and no status yet", v, err)
	}
	if _, err := a.GetNodeGroup(ctx, &v1.NodeGroupGetRequest{Name: "nope"}); !errdefs.IsNotFound(err) {
		t.Errorf("get nope = %v, want not found", err)
	}

	// The controller recorded two nodes for pool: deleting it would leave
	// them without a group.
	st, _ := proto.Marshal(&v1.NodeGroupStatus{Name: "pool", Provider: "local", TargetSize: 2, Source: "manifest",
		Nodes: []*v1.NodeGroupNode{{Name: "pool-a", State: "Running"}, {Name: "pool-b", State: "Running"}}})
	if _, err := s.store.Client.Put(ctx, nodeGroupsPrefix+"pool", string(st)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.DeleteNodeGroup(ctx, &v1.NodeGroupDeleteRequest{Name: "pool"}); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "still has 2 nodes") || stored("pool") == nil {
		t.Errorf("delete pool with nodes = %v; want refused, kept", err)
	}
	// A configured group of the name takes an applied one's place.
	if _, err := a.ApplyNodeGroup(ctx, &v1.NodeGroupApplyRequest{Spec: spec("configured", 0, 3, nil)}); err != nil {
		t.Fatal(err)
	}
	st, _ = proto.Marshal(&v1.NodeGroupStatus{Name: "configured", Provider: "local", TargetSize: 2, Source: "manifest"})
	if _, err := s.store.Client.Put(ctx, nodeGroupsPrefix+"configured", string(st)); err != nil {
		t.Fatal(err)
	}
	if resp, err := a.DeleteNodeGroup(ctx, &v1.NodeGroupDeleteRequest{Name: "configured"}); err != nil || !resp.GetConfigured() || stored("configured") != nil {
		t.Errorf("delete configured = %v, %v; want deleted, the configured group back", resp, err)
	}
	if _, err := a.DeleteNodeGroup(ctx, &v1.NodeGroupDeleteRequest{Name: "configured"}); !errdefs.IsNotFound(err) || !strings.Contains(err.Error(), "configured on the server") {
		t.Errorf("delete configured again = %v; want not found, it is the server's", err)
	}
	// A name a plugin lists is the plugin's.
	st, _ = proto.Marshal(&v1.NodeGroupStatus{Name: "ext", Provider: "aws", Source: "plugin"})
	if _, err := s.store.Client.Put(ctx, nodeGroupsPrefix+"ext", string(st)); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ApplyNodeGroup(ctx, &v1.NodeGroupApplyRequest{Spec: spec("ext", 0, 3, nil)}); !errdefs.IsFailedPrecondition(err) || stored("ext") != nil {
		t.Errorf("apply a plugin's group = %v; want refused", err)
	}
	// The group with no node left goes.
	if _, err := s.store.Client.Delete(ctx, nodeGroupsPrefix+"pool"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.DeleteNodeGroup(ctx, &v1.NodeGroupDeleteRequest{Name: "pool"}); err != nil || stored("pool") != nil {
		t.Errorf("delete pool without nodes = %v; want deleted", err)
	}
	if n, _ := s.store.Client.Get(ctx, nodeGroupSpecsPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); n.Count != 0 {
		t.Errorf("%d node groups left stored", n.Count)
	}
}

// TestCloudNodeWritesAreFenced: the cloud controller's writes to nodes
// (remove, cordon, drain, label) go through the leader's fence: while it
// leads they are made; once it is deposed none is.
func TestCloudNodeWritesAreFenced(t *testing.T) {
	s := newTestServer(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.cache.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for _, n := range []string{"pool-a", "pool-b"} {
		if _, err := s.store.Nodes.Create(ctx, n, &v1.Node{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	sess, err := concurrency.NewSession(s.store.Client, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	el := concurrency.NewElection(sess, store.ElectionPrefix)
	if err := el.Campaign(ctx, "me"); err != nil {
		t.Fatal(err)
	}
	nodes := s.CloudNodes(store.Fenced(s.store.Client, el))
	get := func(name string) *v1.Node {
		n, err := s.store.Nodes.Get(ctx, name)
		if errdefs.IsNotFound(err) {
			return nil
		} else if err != nil {
			t.Fatal(err)
		}
		return n.Value
	}
	if err := nodes.Drain(ctx, "pool-a"); err != nil || !get("pool-a").GetDraining() {
		t.Fatalf("drain while leading: %v, %v", err, get("pool-a"))
	}
	if err := nodes.Label(ctx, "pool-a", map[string]string{provider.LabelProviderID: "pool-a"}); err != nil || get("pool-a").GetLabels()[provider.LabelProviderID] != "pool-a" {
		t.Fatalf("label while leading: %v, %v", err, get("pool-a"))
	}
	if _, err := nodes.Remove(ctx, "pool-a"); err != nil || get("pool-a") != nil {
		t.Fatalf("remove while leading: %v, %v", err, get("pool-a"))
	}

	if _, err := s.store.Client.Revoke(ctx, sess.Lease()); err != nil { // deposed
		t.Fatal(err)
	}
	if _, err := nodes.Remove(ctx, "pool-b"); err == nil || get("pool-b") == nil {
		t.Errorf("a deposed leader removed node pool-b (%v)", err)
	}
	if err := nodes.SetCordoned(ctx, "pool-b", true); err == nil || get("pool-b").GetCordoned() {
		t.Errorf("a deposed leader cordoned node pool-b (%v)", err)
	}
	if err := nodes.Drain(ctx, "pool-b"); err == nil || get("pool-b").GetDraining() {
		t.Errorf("a deposed leader drained node pool-b (%v)", err)
	}
	if err := nodes.Label(ctx, "pool-b", map[string]string{"x": "y"}); err == nil || get("pool-b").GetLabels()["x"] != "" {
		t.Errorf("a deposed leader labelled node pool-b (%v)", err)
	}
	// The API's own RemoveNode is the admin's, not fenced.
	if _, err := (&controlAPI{s: s}).RemoveNode(ctx, &v1.RemoveNodeRequest{Name: "pool-b", Force: true}); err != nil || get("pool-b") != nil {
		t.Errorf("node rm --force: %v, %v", err, get("pool-b"))
	}
}
