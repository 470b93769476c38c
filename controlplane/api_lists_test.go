package controlplane_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/wasmorch/wasmorch/controlplane/api"
	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/controlplane/scheduler"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// applyHello deploys hello.wasm as name with replicas instances.
func applyHello(t *testing.T, c *cluster, name string, replicas int32) {
	t.Helper()
	ctx := context.Background()
	hello := readModule(t, "hello.wasm")
	digest := blobs.Digest(hello)
	if err := upload(ctx, t, c.control, hello, digest); err != nil {
		t.Fatal(err)
	}
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: name, Spec: &v1.WorkloadSpec{ModuleDigest: digest, Replicas: replicas}}); err != nil {
		t.Fatal(err)
	}
}

// waitTotal waits until workload has total instances.
func waitTotal(t *testing.T, c *cluster, workload string, total int32) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s has %d instances", workload, total), func() (bool, string) {
		v, err := c.control.GetWorkload(context.Background(), &v1.GetWorkloadRequest{Name: workload})
		if err != nil {
			t.Fatal(err)
		}
		return v.GetTotal() == total, v.String()
	})
}

// pageAll lists every page of req with limit, checking that each page
// holds at most limit instances in ID order after the previous page's,
// and returns them with the number of pages.
func pageAll(t *testing.T, c *cluster, req *v1.ListInstancesRequest) ([]*v1.InstanceView, int) {
	t.Helper()
	var all []*v1.InstanceView
	pages := 0
	for {
		l, err := c.control.ListInstances(context.Background(), req)
		if err != nil {
			t.Fatalf("page %d of %v: %v", pages+1, req, err)
		}
		pages++
		if len(l.GetInstances()) > int(req.GetLimit()) && req.GetLimit() > 0 {
			t.Fatalf("page %d holds %d instances, more than the limit %d", pages, len(l.GetInstances()), req.GetLimit())
		}
		if l.GetRevision() == 0 {
			t.Fatalf("page %d has no revision", pages)
		}
		for _, iv := range l.GetInstances() {
			if n := len(all); n > 0 && all[n-1].GetInstance().GetId() >= iv.GetInstance().GetId() {
				t.Fatalf("page %d: %s comes after %s: not in ID order", pages, iv.GetInstance().GetId(), all[n-1].GetInstance().GetId())
			}
			all = append(all, iv)
		}
		if l.GetContinue() == "" {
			return all, pages
		}
		req.Continue = l.GetContinue()
	}
}

func ids(vs []*v1.InstanceView) map[string]bool {
	out := map[string]bool{}
	for _, v := range vs {
		out[v.GetInstance().GetId()] = true
	}
	return out
}

// TestListInstancesPagesEveryInstanceOnce: a list read page by page,
// with or without filters, holds every instance it selects exactly once,
// and a continue token is refused with other filters, as is a page over
// the maximum.
func TestListInstancesPagesEveryInstanceOnce(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	registerFake(t, c, "n1", "n2") // 100 instances each
	applyHello(t, c, "big", 1030)
	applyHello(t, c, "small", 30)
	waitTotal(t, c, "big", 1030)
	waitTotal(t, c, "small", 30)
	eventually(t, "200 instances placed", func() (bool, string) {
		on1, _ := pageAll(t, c, &v1.ListInstancesRequest{Node: "n1", Limit: api.MaxPageSize})
		on2, _ := pageAll(t, c, &v1.ListInstancesRequest{Node: "n2", Limit: api.MaxPageSize})
		return len(on1)+len(on2) == 200, fmt.Sprintf("%d on n1, %d on n2", len(on1), len(on2))
	})

	all, pages := pageAll(t, c, &v1.ListInstancesRequest{Limit: 100})
	if len(all) != 1060 || len(ids(all)) != 1060 || pages != 11 {
		t.Fatalf("paging by 100 gave %d instances (%d distinct) in %d pages; want 1060 in 11", len(all), len(ids(all)), pages)
	}
	byDefault, _ := pageAll(t, c, &v1.ListInstancesRequest{})
	if len(byDefault) != 1060 {
		t.Errorf("default pages gave %d instances, want 1060", len(byDefault))
	}

	small, _ := pageAll(t, c, &v1.ListInstancesRequest{Workload: "small", Limit: 7})
	for _, iv := range small {
		if iv.GetInstance().GetWorkload() != "small" {
			t.Errorf("workload=small listed %s of %s", iv.GetInstance().GetId(), iv.GetInstance().GetWorkload())
		}
	}
	if len(small) != 30 {
		t.Errorf("workload=small by 7: %d instances, want 30", len(small))
	}

	// Nodes and states partition the instances: n1, n2, and the Pending
	// ones (nothing reports, so the placed ones are Scheduled).
	seen := map[string]bool{}
	for _, req := range []*v1.ListInstancesRequest{
		{Node: "n1", Limit: 33},
		{Node: "n2", Limit: 33},
		{States: []v1.InstanceState{v1.InstanceState_INSTANCE_STATE_PENDING}, Limit: 250},
	} {
		got, _ := pageAll(t, c, req)
		for _, iv := range got {
			switch {
			case req.Node != "" && iv.GetInstance().GetNode() != req.Node:
				t.Errorf("node=%s listed %s on %q", req.Node, iv.GetInstance().GetId(), iv.GetInstance().GetNode())
			case len(req.States) > 0 && iv.GetState() != req.States[0]:
				t.Errorf("states=%v listed %s in %v", req.States, iv.GetInstance().GetId(), iv.GetState())
			case seen[iv.GetInstance().GetId()]:
				t.Errorf("%s listed by two filters", iv.GetInstance().GetId())
			}
			seen[iv.GetInstance().GetId()] = true
		}
	}
	if len(seen) != 1060 {
		t.Errorf("nodes n1, n2 and Pending cover %d instances, want all 1060", len(seen))
	}
	both, _ := pageAll(t, c, &v1.ListInstancesRequest{Workload: "small", Node: "n1",
		States: []v1.InstanceState{v1.InstanceState_INSTANCE_STATE_SCHEDULED, v1.InstanceState_INSTANCE_STATE_RUNNING}, Limit: 3})
	for _, iv := range both {
		if iv.GetInstance().GetWorkload() != "small" || iv.GetInstance().GetNode() != "n1" || iv.GetState() != v1.InstanceState_INSTANCE_STATE_SCHEDULED {
			t.Errorf("workload=small, node=n1, Scheduled or Running listed %v", iv)
		}
	}

	first, err := c.control.ListInstances(ctx, &v1.ListInstancesRequest{Workload: "big", Limit: 10})
	if err != nil || first.GetContinue() == "" {
		t.Fatalf("first page of big: %v, continue %q", err, first.GetContinue())
	}
	for name, req := range map[string]*v1.ListInstancesRequest{
		"another workload": {Workload: "small", Limit: 10, Continue: first.GetContinue()},
		"no filter":        {Limit: 10, Continue: first.GetContinue()},
		"a node too":       {Workload: "big", Node: "n1", Limit: 10, Continue: first.GetContinue()},
		"a made-up token":  {Workload: "big", Limit: 10, Continue: "bm90LWEtdG9rZW4"},
		"over the maximum": {Limit: api.MaxPageSize + 1},
		"a negative limit": {Limit: -1},
		"an unknown state": {States: []v1.InstanceState{42}},
	} {
		_, err := c.control.ListInstances(ctx, req)
		if !errdefs.IsInvalidArgument(errdefs.FromGRPC(err)) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: %v, want one line of InvalidArgument", name, err)
		}
	}
	if _, err := c.control.ListWorkloads(ctx, &v1.ListWorkloadsRequest{Continue: first.GetContinue()}); !errdefs.IsInvalidArgument(errdefs.FromGRPC(err)) {
		t.Errorf("an instance token for workloads: %v, want InvalidArgument", err)
	}
	if _, err := c.control.ListInstances(ctx, &v1.ListInstancesRequest{Workload: "nope"}); !errdefs.IsNotFound(errdefs.FromGRPC(err)) {
		t.Errorf("instances of an unknown workload: %v, want NotFound", err)
	}
	next, err := c.control.ListInstances(ctx, &v1.ListInstancesRequest{Workload: "big", Limit: 10, Continue: first.GetContinue()})
	if err != nil || len(next.GetInstances()) != 10 || next.GetInstances()[0].GetInstance().GetId() <= first.GetInstances()[9].GetInstance().GetId() {
		t.Errorf("second page of big with its own filters: %v", err)
	}
}

// TestListNodesSelectsByLabelsAndPages: a selector narrows the nodes,
// pages follow it, and each node shows what its instances hold.
func TestListNodesSelectsByLabelsAndPages(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	for i := range 9 {
		zone := []string{"a", "b", "c"}[i%3]
		if _, err := c.agent.Register(ctx, &v1.RegisterRequest{Node: &v1.Node{
			Name: fmt.Sprintf("n%d", i), Labels: map[string]string{"zone": zone, "disk": "ssd"}, Runtimes: []string{"wasm"},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	req := &v1.ListNodesRequest{Selector: map[string]string{"zone": "b", "disk": "ssd"}, Limit: 2}
	pages := 0
	for {
		l, err := c.control.ListNodes(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, nv := range l.GetNodes() {
			names = append(names, nv.GetNode().GetName())
		}
		if l.GetContinue() == "" {
			break
		}
		req.Continue = l.GetContinue()
		if pages == 1 {
			_, err := c.control.ListNodes(ctx, &v1.ListNodesRequest{Selector: map[string]string{"zone": "a"}, Continue: l.GetContinue()})
			if !errdefs.IsInvalidArgument(errdefs.FromGRPC(err)) {
				t.Errorf("continue with another selector: %v, want InvalidArgument", err)
			}
		}
	}
	if want := []string{"n1", "n4", "n7"}; fmt.Sprint(names) != fmt.Sprint(want) || pages != 2 {
		t.Errorf("zone=b by 2: %v in %d pages, want %v in 2", names, pages, want)
	}
	l, err := c.control.ListNodes(ctx, &v1.ListNodesRequest{Selector: map[string]string{"zone": "d"}})
	if err != nil || len(l.GetNodes()) != 0 || l.GetContinue() != "" {
		t.Errorf("zone=d: %v, %v; want no node", l, err)
	}
}

// TestNodeViewsCountTheInstancesTheyHold: a node's instance count and
// allocation are those of the instances bound to it.
func TestNodeViewsCountTheInstancesTheyHold(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	registerFake(t, c, "n1", "n2")
	applyHello(t, c, "web", 5)
	eventually(t, "web placed", func() (bool, string) {
		l, err := c.control.ListInstances(ctx, &v1.ListInstancesRequest{States: []v1.InstanceState{v1.InstanceState_INSTANCE_STATE_SCHEDULED}})
		return err == nil && len(l.GetInstances()) == 5, fmt.Sprint(l, err)
	})
	l, err := c.control.ListNodes(ctx, &v1.ListNodesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var total int32
	for _, nv := range l.GetNodes() {
		on, _ := pageAll(t, c, &v1.ListInstancesRequest{Node: nv.GetNode().GetName()})
		var mem int64
		for _, iv := range on {
			mem += scheduler.InstanceMemoryRequest(iv.GetInstance())
		}
		if int(nv.GetInstances()) != len(on) || nv.GetAllocated().GetInstances() != nv.GetInstances() || nv.GetAllocated().GetMemoryBytes() != mem || !nv.GetReady() {
			t.Errorf("node %s shows %d instances, %v allocated, ready %v; it holds %d with %d bytes", nv.GetNode().GetName(),
				nv.GetInstances(), nv.GetAllocated(), nv.GetReady(), len(on), mem)
		}
		total += nv.GetInstances()
	}
	if total != 5 {
		t.Errorf("nodes hold %d instances, want 5", total)
	}
	cordoned, err := c.control.CordonNode(ctx, &v1.NodeRequest{Name: "n1"})
	if err != nil || !cordoned.GetNode().GetCordoned() || cordoned.GetAllocated() == nil {
		t.Errorf("cordon n1 answered %v, %v; want n1 cordoned with its allocation", cordoned, err)
	}
}

// TestListWorkloadsAndEventsPage: workloads page in name order; events
// of one object page oldest first, all at the first page's revision.
func TestListWorkloadsAndEventsPage(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	var want []string
	for i := range 7 {
		name := fmt.Sprintf("w%d", i)
		applyHello(t, c, name, 0)
		want = append(want, name)
	}
	var got []string
	req := &v1.ListWorkloadsRequest{Limit: 3}
	for {
		l, err := c.control.ListWorkloads(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, wv := range l.GetWorkloads() {
			got = append(got, wv.GetWorkload().GetName())
		}
		if l.GetContinue() == "" {
			break
		}
		req.Continue = l.GetContinue()
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("workloads by 3: %v, want %v", got, want)
	}

	registerFake(t, c, "n1")
	for range 6 {
		for _, call := range []func(context.Context, *v1.NodeRequest, ...grpc.CallOption) (*v1.NodeView, error){c.control.CordonNode, c.control.UncordonNode} {
			if _, err := call(ctx, &v1.NodeRequest{Name: "n1"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	whole, err := c.control.ListEvents(ctx, &v1.ListEventsRequest{Object: "node/n1"})
	if err != nil || len(whole.GetEvents()) < 12 {
		t.Fatalf("events of node/n1: %d, %v; want at least the 12 cordons and uncordons", len(whole.GetEvents()), err)
	}
	var paged []*v1.Event
	evReq := &v1.ListEventsRequest{Object: "node/n1", Limit: 5}
	var revs []int64
	for {
		l, err := c.control.ListEvents(ctx, evReq)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, l.GetEvents()...)
		revs = append(revs, l.GetRevision())
		if l.GetContinue() == "" {
			break
		}
		if len(revs) == 1 {
			// A later event is not in this list's pages, which are one
			// snapshot; another object's continue is refused.
			if _, err := c.control.CordonNode(ctx, &v1.NodeRequest{Name: "n1"}); err != nil {
				t.Fatal(err)
			}
			if _, err := c.control.ListEvents(ctx, &v1.ListEventsRequest{Object: "node/n2", Continue: l.GetContinue()}); !errdefs.IsInvalidArgument(errdefs.FromGRPC(err)) {
				t.Errorf("events of node/n2 with node/n1's token: %v, want InvalidArgument", err)
			}
		}
		evReq.Continue = l.GetContinue()
	}
	if len(paged) != len(whole.GetEvents()) {
		t.Fatalf("events by 5: %d, want the %d of one list", len(paged), len(whole.GetEvents()))
	}
	for i, e := range paged {
		if e.GetUnixNano() != whole.GetEvents()[i].GetUnixNano() || i > 0 && e.GetUnixNano() < paged[i-1].GetUnixNano() {
			t.Fatalf("event %d by 5 is %v; one list has %v there (oldest first)", i, e, whole.GetEvents()[i])
		}
	}
	for _, r := range revs {
		if r != revs[0] {
			t.Errorf("pages of one event list at revisions %v, want one", revs)
			break
		}
	}
	all, err := c.control.ListEvents(ctx, &v1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	objects := []string{}
	for _, e := range all.GetEvents() {
		if n := len(objects); n == 0 || objects[n-1] != e.GetObject() {
			objects = append(objects, e.GetObject())
		}
	}
	if !sort.StringsAreSorted(objects) {
		t.Errorf("every object's events come object by object: %v", objects)
	}
}
