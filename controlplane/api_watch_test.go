package controlplane_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// watch opens a Watch; the stream ends with the test (or a safety limit).
func watch(t *testing.T, c v1.ControlClient, req *v1.WatchRequest) v1.Control_WatchClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	s, err := c.Watch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// recvUntil receives events until done says it has what it waited for,
// and returns them.
func recvUntil(t *testing.T, s v1.Control_WatchClient, what string, done func([]*v1.WatchEvent) bool) []*v1.WatchEvent {
	t.Helper()
	var got []*v1.WatchEvent
	for !done(got) {
		ev, err := s.Recv()
		if err != nil {
			t.Fatalf("waiting for %s: %v; got %v", what, err, got)
		}
		got = append(got, ev)
	}
	return got
}

func scale(t *testing.T, c *cluster, name string, replicas int32) {
	t.Helper()
	if _, err := c.control.ScaleWorkload(context.Background(), &v1.ScaleRequest{Name: name, Replicas: replicas}); err != nil {
		t.Fatal(err)
	}
}

// TestWatchInstancesFromARevision: a watch from a list's revision replays
// what changed since, then follows; an instance that goes comes as
// DELETED with its record.
func TestWatchInstancesFromARevision(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	registerFake(t, c, "n1")
	applyHello(t, c, "web", 2)
	waitTotal(t, c, "web", 2)
	listed, err := c.control.ListInstances(ctx, &v1.ListInstancesRequest{Workload: "web"})
	if err != nil {
		t.Fatal(err)
	}
	known := ids(listed.GetInstances())
	scale(t, c, "web", 4)
	waitTotal(t, c, "web", 4)
	applyHello(t, c, "other", 1) // another workload's instances are not sent

	s := watch(t, c.control, &v1.WatchRequest{Kind: v1.WatchKind_WATCH_KIND_INSTANCES, Workload: "web", Revision: listed.GetRevision()})
	first, err := s.Recv()
	if err != nil || first.GetType() != v1.WatchEventType_WATCH_EVENT_TYPE_BOOKMARK || first.GetRevision() != listed.GetRevision() {
		t.Fatalf("first event %v, %v; want a BOOKMARK at the list's revision %d", first, err, listed.GetRevision())
	}
	current := map[string]bool{}
	for id := range known {
		current[id] = true
	}
	added := map[string]bool{}
	recvUntil(t, s, "the 2 instances made after the list", func(evs []*v1.WatchEvent) bool {
		if len(evs) == 0 {
			return false
		}
		ev := evs[len(evs)-1]
		if ev.GetType() == v1.WatchEventType_WATCH_EVENT_TYPE_MODIFIED {
			inst := ev.GetInstance().GetInstance()
			if inst.GetWorkload() != "web" {
				t.Fatalf("a watch of web's instances sent %v", ev)
			}
			if !known[inst.GetId()] {
				added[inst.GetId()] = true
				current[inst.GetId()] = true
			}
		}
		return len(added) == 2
	})

	scale(t, c, "web", 0)
	deleted := map[string]bool{}
	recvUntil(t, s, "every instance of web DELETED", func(evs []*v1.WatchEvent) bool {
		if len(evs) == 0 {
			return false
		}
		if ev := evs[len(evs)-1]; ev.GetType() == v1.WatchEventType_WATCH_EVENT_TYPE_DELETED {
			iv := ev.GetInstance()
			if iv.GetInstance().GetWorkload() != "web" || iv.GetInstance().GetId() == "" || iv.GetState() == v1.InstanceState_INSTANCE_STATE_UNSPECIFIED || ev.GetRevision() == 0 {
				t.Fatalf("DELETED does not carry the instance: %v", ev)
			}
			deleted[iv.GetInstance().GetId()] = true
		}
		return len(deleted) == len(current)
	})
	for id := range current {
		if !deleted[id] {
			t.Errorf("%s was not DELETED (deleted: %v)", id, deleted)
		}
	}
}

// TestWatchWorkloadsAndNodes: a watch from now follows changes of
// workloads (a deleted one carries its record) and of nodes (with what
// their instances hold).
func TestWatchWorkloadsAndNodes(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	registerFake(t, c, "n1")
	applyHello(t, c, "web", 1)
	wl := watch(t, c.control, &v1.WatchRequest{Kind: v1.WatchKind_WATCH_KIND_WORKLOADS})
	nodes := watch(t, c.control, &v1.WatchRequest{Kind: v1.WatchKind_WATCH_KIND_NODES})
	for _, s := range []v1.Control_WatchClient{wl, nodes} {
		if ev, err := s.Recv(); err != nil || ev.GetType() != v1.WatchEventType_WATCH_EVENT_TYPE_BOOKMARK || ev.GetRevision() == 0 {
			t.Fatalf("first event %v, %v; want a BOOKMARK", ev, err)
		}
	}
	scale(t, c, "web", 3)
	recvUntil(t, wl, "web with 3 replicas", func(evs []*v1.WatchEvent) bool {
		return len(evs) > 0 && evs[len(evs)-1].GetWorkload().GetWorkload().GetSpec().GetReplicas() == 3
	})
	recvUntil(t, nodes, "n1 holding 3 instances", func(evs []*v1.WatchEvent) bool {
		if len(evs) == 0 {
			return false
		}
		ev := evs[len(evs)-1]
		return ev.GetType() == v1.WatchEventType_WATCH_EVENT_TYPE_MODIFIED && ev.GetNode().GetNode().GetName() == "n1" &&
			ev.GetNode().GetInstances() == 3 && ev.GetNode().GetAllocated().GetInstances() == 3
	})
	if _, err := c.control.CordonNode(ctx, &v1.NodeRequest{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, nodes, "n1 cordoned", func(evs []*v1.WatchEvent) bool {
		return len(evs) > 0 && evs[len(evs)-1].GetNode().GetNode().GetCordoned()
	})
	if _, err := c.control.DeleteWorkload(ctx, &v1.DeleteWorkloadRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, wl, "web DELETED", func(evs []*v1.WatchEvent) bool {
		if len(evs) == 0 {
			return false
		}
		ev := evs[len(evs)-1]
		return ev.GetType() == v1.WatchEventType_WATCH_EVENT_TYPE_DELETED && ev.GetWorkload().GetWorkload().GetName() == "web" &&
			ev.GetWorkload().GetWorkload().GetSpec().GetReplicas() == 3
	})
}

// TestWatchEventsFromARevision: events recorded after a list's revision
// are replayed, then new ones follow.
func TestWatchEventsFromARevision(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	registerFake(t, c, "n1", "n2")
	listed, err := c.control.ListEvents(ctx, &v1.ListEventsRequest{Object: "node/n1"})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"n2", "n1"} {
		if _, err := c.control.CordonNode(ctx, &v1.NodeRequest{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
	s := watch(t, c.control, &v1.WatchRequest{Kind: v1.WatchKind_WATCH_KIND_EVENTS, Node: "n1", Revision: listed.GetRevision()})
	reason := func(want string) func([]*v1.WatchEvent) bool {
		return func(evs []*v1.WatchEvent) bool {
			if len(evs) == 0 {
				return false
			}
			ev := evs[len(evs)-1]
			if e := ev.GetEvent(); e != nil && e.GetObject() != "node/n1" {
				t.Fatalf("a watch of node n1's events sent %v", ev)
			}
			return ev.GetType() == v1.WatchEventType_WATCH_EVENT_TYPE_ADDED && ev.GetEvent().GetReason() == want && ev.GetRevision() > listed.GetRevision()
		}
	}
	recvUntil(t, s, "NodeCordoned, recorded after the list", reason("NodeCordoned"))
	if _, err := c.control.UncordonNode(ctx, &v1.NodeRequest{Name: "n1"}); err != nil {
		t.Fatal(err)
	}
	recvUntil(t, s, "NodeUncordoned", reason("NodeUncordoned"))
}

// TestWatchRefusesWhatItCannotServe: a revision older than the member's
// cache keeps (here: from before the member restarted and listed the
// cluster again) is OUT_OF_RANGE; one beyond the cluster's, an unknown
// kind or a filter a kind does not take are invalid.
func TestWatchRefusesWhatItCannotServe(t *testing.T) {
	dir := t.TempDir()
	c := startCluster(t, dir)
	ctx := context.Background()
	applyHello(t, c, "web", 0)
	l, err := c.control.ListWorkloads(ctx, &v1.ListWorkloadsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	scale(t, c, "web", 1)
	c.stop(t)
	c = startCluster(t, dir)
	for _, k := range []v1.WatchKind{v1.WatchKind_WATCH_KIND_WORKLOADS, v1.WatchKind_WATCH_KIND_INSTANCES} {
		s := watch(t, c.control, &v1.WatchRequest{Kind: k, Revision: l.GetRevision()})
		_, err := s.Recv()
		if !errdefs.IsExpired(errdefs.FromGRPC(err)) || !strings.Contains(err.Error(), "list again") {
			t.Errorf("a watch of %v from before the member restarted: %v, want OUT_OF_RANGE saying to list again", k, err)
		}
	}
	for name, req := range map[string]*v1.WatchRequest{
		"a revision ahead":      {Kind: v1.WatchKind_WATCH_KIND_WORKLOADS, Revision: l.GetRevision() + 1000},
		"no kind":               {},
		"workloads of a node":   {Kind: v1.WatchKind_WATCH_KIND_WORKLOADS, Node: "n1"},
		"events of two objects": {Kind: v1.WatchKind_WATCH_KIND_EVENTS, Node: "n1", Workload: "web"},
		"a negative revision":   {Kind: v1.WatchKind_WATCH_KIND_NODES, Revision: -1},
	} {
		s := watch(t, c.control, req)
		if _, err := s.Recv(); !errdefs.IsInvalidArgument(errdefs.FromGRPC(err)) {
			t.Errorf("%s: %v, want InvalidArgument", name, err)
		}
	}
}

// TestWatchEndsCleanlyWhenTheMemberStops: a member shutting down ends its
// watches without an error, so that clients watch again elsewhere.
func TestWatchEndsCleanlyWhenTheMemberStops(t *testing.T) {
	c := startCluster(t, t.TempDir())
	var streams []v1.Control_WatchClient
	for _, k := range []v1.WatchKind{v1.WatchKind_WATCH_KIND_WORKLOADS, v1.WatchKind_WATCH_KIND_EVENTS} {
		s := watch(t, c.control, &v1.WatchRequest{Kind: k})
		if _, err := s.Recv(); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, s)
	}
	c.stop(t)
	for _, s := range streams {
		for {
			_, err := s.Recv()
			if err == nil {
				continue // a change made while stopping
			}
			if !errors.Is(err, io.EOF) {
				t.Errorf("a watch ended with %v as its member stopped, want a clean end", err)
			}
			break
		}
	}
}

// TestWatchIsForAdminsNotNodes: Watch is a Control call: an admin may
// make it, a node may not.
func TestWatchIsForAdminsNotNodes(t *testing.T) {
	c := startCluster(t, t.TempDir())
	admin, err := c.srv.AdminCredential()
	if err != nil {
		t.Fatal(err)
	}
	adminTLS, err := admin.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "node")
	if err := c.srv.IssueNodeCredential(dir, "n1"); err != nil {
		t.Fatal(err)
	}
	nc, err := auth.LoadNodeCredential(dir)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := auth.NewKeypair(nc.CertPEM, nc.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(nc.CAPEM)
	for who, creds := range map[string]credentials.TransportCredentials{
		"admin": credentials.NewTLS(adminTLS),
		"node":  credentials.NewTLS(auth.MemberClientTLS(pool, kp)),
	} {
		conn, err := grpc.NewClient(c.srv.APIAddr(), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, err = watch(t, v1.NewControlClient(conn), &v1.WatchRequest{Kind: v1.WatchKind_WATCH_KIND_NODES}).Recv()
		denied := errdefs.IsPermissionDenied(errdefs.FromGRPC(err))
		if who == "admin" && err != nil || who == "node" && !denied {
			t.Errorf("%s watching nodes: %v", who, fmt.Sprint(err))
		}
	}
}
