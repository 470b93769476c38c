package api

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// The tests here drive node sessions on a member whose cache follows a
// real embedded etcd, with no controller: the test writes the instance
// records itself, so that it knows exactly what each session must send.

type sessionWorld struct {
	t   *testing.T
	s   *Server
	api *agentAPI
	ctx context.Context
}

func newSessionWorld(t *testing.T) *sessionWorld {
	t.Helper()
	return newSessionWorldWith(t, nil)
}

// newSessionWorldWith is newSessionWorld with the API's config changed by
// set.
func newSessionWorldWith(t *testing.T, set func(*Config)) *sessionWorld {
	t.Helper()
	w := newSessionWorldNoCacheWith(t, set)
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(w.ctx)
	t.Cleanup(func() { cancel(); <-done })
	go func() { defer close(done); _ = w.s.cache.Start(ctx) }()
	if err := w.s.cache.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	return w
}

// newSessionWorldNoCache is a member whose cache never starts (it holds
// nothing): what it knows, it learns from etcd.
func newSessionWorldNoCache(t *testing.T) *sessionWorld {
	t.Helper()
	return newSessionWorldNoCacheWith(t, nil)
}

func newSessionWorldNoCacheWith(t *testing.T, set func(*Config)) *sessionWorld {
	t.Helper()
	s := newTestServer(t, set)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w := &sessionWorld{t: t, s: s, api: &agentAPI{s: s, leases: map[string]nodeLease{}}, ctx: ctx}
	for _, n := range []string{"n1", "n2"} {
		w.node(n)
	}
	// Records written before the cache lists: a revision before its list
	// is one it cannot resume from.
	w.instance("a1", "n1", false)
	w.instance("b1", "n2", false)
	return w
}

// commit writes ops in one transaction and returns its revision.
func (w *sessionWorld) commit(ops ...clientv3.Op) int64 {
	w.t.Helper()
	resp, err := w.s.store.Client.Txn(w.ctx).Then(ops...).Commit()
	if err != nil {
		w.t.Fatal(err)
	}
	return resp.Header.Revision
}

func (w *sessionWorld) node(name string) int64 {
	w.t.Helper()
	op, err := w.s.store.Nodes.PutOp(name, &v1.Node{Name: name})
	if err != nil {
		w.t.Fatal(err)
	}
	return w.commit(op)
}

// instance writes instance id bound to node (lost: marked lost).
func (w *sessionWorld) instance(id, node string, lost bool) int64 {
	w.t.Helper()
	inst := &v1.Instance{Id: id, Workload: "app", Generation: 1, Node: node, Spec: &v1.WorkloadSpec{ModuleDigest: "sha256:00"}}
	if lost {
		inst.LostUnixNano = time.Now().UnixNano()
	}
	op, err := w.s.store.Instances.PutOp(id, inst)
	if err != nil {
		w.t.Fatal(err)
	}
	return w.commit(op)
}

// report stores a status of id, as ReportStatus does.
func (w *sessionWorld) report(id, node string) int64 {
	w.t.Helper()
	op, err := w.s.store.Statuses.PutOp(id, &v1.InstanceStatus{Id: id, Node: node, State: v1.InstanceState_INSTANCE_STATE_RUNNING})
	if err != nil {
		w.t.Fatal(err)
	}
	return w.commit(op)
}

func (w *sessionWorld) remove(id string) int64 {
	w.t.Helper()
	return w.commit(w.s.store.Instances.DeleteOp(id))
}

// reached waits until the member's cache has applied rev.
func (w *sessionWorld) reached(rev int64) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(w.ctx, 20*time.Second)
	defer cancel()
	if err := w.s.cache.WaitFor(ctx, rev); err != nil {
		w.t.Fatal(err)
	}
}

// sessionStream is the server side of one Session stream, in memory.
type sessionStream struct {
	grpc.ServerStream // only Context and Send are used
	ctx               context.Context
	msgs              chan *v1.Assignments
}

func (s *sessionStream) Context() context.Context { return s.ctx }
func (s *sessionStream) Send(m *v1.Assignments) error {
	select {
	case s.msgs <- m:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

type testSession struct {
	t      *testing.T
	stream *sessionStream
	cancel context.CancelFunc
	done   chan error
}

// open starts a session as a worker opens one.
func (w *sessionWorld) open(req *v1.SessionRequest) *testSession {
	w.t.Helper()
	ctx, cancel := context.WithCancel(w.ctx)
	ts := &testSession{t: w.t, stream: &sessionStream{ctx: ctx, msgs: make(chan *v1.Assignments, 100)}, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- w.api.Session(req, ts.stream) }()
	w.t.Cleanup(ts.close)
	return ts
}

func (ts *testSession) close() {
	ts.cancel()
	select {
	case <-ts.done:
		ts.done <- nil
	case <-time.After(20 * time.Second):
		ts.t.Error("session did not end within 20s of its context")
	}
}

// next is the session's next message (the wait is a hang guard).
func (ts *testSession) next() *v1.Assignments {
	ts.t.Helper()
	select {
	case m := <-ts.stream.msgs:
		return m
	case err := <-ts.done:
		ts.t.Fatalf("session ended: %v", err)
	case <-time.After(20 * time.Second):
		ts.t.Fatal("no session message within 20s")
	}
	return nil
}

// pending is how many messages were sent and not read.
func (ts *testSession) pending() int { return len(ts.stream.msgs) }

func idsOf(insts []*v1.Instance) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.GetId()
	}
	return out
}

// expect fails unless m is a full set (full) or a delta of exactly
// instances and removed, as of rev or later.
func expect(t *testing.T, what string, m *v1.Assignments, full bool, instances, removed []string, rev int64) {
	t.Helper()
	if m.GetFull() != full || !slices.Equal(idsOf(m.GetInstances()), instances) || !slices.Equal(m.GetRemoved(), removed) || m.GetRevision() < rev {
		t.Fatalf("%s: got full=%v instances=%v removed=%v revision=%d; want full=%v instances=%v removed=%v revision>=%d",
			what, m.GetFull(), idsOf(m.GetInstances()), m.GetRemoved(), m.GetRevision(), full, instances, removed, rev)
	}
}

// TestSessionSendsAFullSetThenDeltasOfItsOwnInstances: the first message
// is the node's whole set, then each delta carries what changed among the
// node's own instances: a new one, a lost one, a deleted one. Other nodes'
// instances and status reports send nothing.
func TestSessionSendsAFullSetThenDeltasOfItsOwnInstances(t *testing.T) {
	w := newSessionWorld(t)
	rev := w.instance("a2", "n1", false)
	w.reached(rev)
	n1 := w.open(&v1.SessionRequest{Node: "n1", Deltas: true})
	expect(t, "first message", n1.next(), true, []string{"a1", "a2"}, nil, rev)

	rev = w.instance("a3", "n1", false)
	expect(t, "a new instance", n1.next(), false, []string{"a3"}, nil, rev)

	// None of these concern n1's set: another node's instance, a status.
	w.instance("b2", "n2", false)
	w.report("a1", "n1")
	rev = w.instance("a2", "n1", true)
	expect(t, "a2 lost", n1.next(), false, nil, []string{"a2"}, rev)

	rev = w.remove("a3")
	expect(t, "a3 deleted", n1.next(), false, nil, []string{"a3"}, rev)
	// An instance moved to this node from nowhere (placed) is added.
	w.instance("p1", "", false)
	rev = w.instance("p1", "n1", false)
	expect(t, "p1 placed", n1.next(), false, []string{"p1"}, nil, rev)
	w.report("p1", "n1")
	rev = w.remove("p1")
	expect(t, "p1 deleted after its status", n1.next(), false, nil, []string{"p1"}, rev)
}

// TestSessionResumesFromARevision: a worker that resumes from the revision
// of the last message it applied gets only what changed since, as a
// delta; one whose revision this member no longer keeps (older than its
// cache) gets the full set.
func TestSessionResumesFromARevision(t *testing.T) {
	w := newSessionWorld(t)
	first := w.open(&v1.SessionRequest{Node: "n1", Deltas: true})
	set := first.next()
	expect(t, "first message", set, true, []string{"a1"}, nil, 0)
	first.close()

	w.instance("a2", "n1", false)
	w.instance("b2", "n2", false)
	w.remove("a1")
	w.instance("a3", "n1", false)
	rev := w.instance("a3", "n1", true) // lost before the node heard of it
	resumed := w.open(&v1.SessionRequest{Node: "n1", Deltas: true, ResumeRevision: set.GetRevision()})
	expect(t, "resumed", resumed.next(), false, []string{"a2"}, []string{"a1", "a3"}, rev)

	// Nothing changed since: a resumed session says so, at once.
	resumed.close()
	rev = w.s.cache.Rev()
	again := w.open(&v1.SessionRequest{Node: "n1", Deltas: true, ResumeRevision: rev})
	expect(t, "resumed with nothing new", again.next(), false, nil, nil, rev)

	old := w.open(&v1.SessionRequest{Node: "n1", Deltas: true, ResumeRevision: 1})
	expect(t, "resumed from before the cache", old.next(), true, []string{"a2"}, nil, rev)
}

// TestSessionWithoutDeltasGetsFullSets: a worker that did not ask for
// deltas (an older worker, a simulated node) gets the whole set on every
// change to it.
func TestSessionWithoutDeltasGetsFullSets(t *testing.T) {
	w := newSessionWorld(t)
	n1 := w.open(&v1.SessionRequest{Node: "n1", ResumeRevision: 1})
	expect(t, "first message", n1.next(), true, []string{"a1"}, nil, 0)
	rev := w.instance("a2", "n1", false)
	expect(t, "a2 added", n1.next(), true, []string{"a1", "a2"}, nil, rev)
	w.report("a2", "n1")
	w.instance("b2", "n2", false)
	rev = w.instance("a1", "n1", true)
	expect(t, "a1 lost", n1.next(), true, []string{"a2"}, nil, rev)
}

// TestChangeOnOneNodeCostsAnotherNodesSessionNothing counts: a burst of
// changes to node n1's instances wakes n1's session and sends it messages,
// and leaves n2's session asleep — its node watch is never signalled and
// it sends nothing.
func TestChangeOnOneNodeCostsAnotherNodesSessionNothing(t *testing.T) {
	w := newSessionWorld(t)
	n1 := w.open(&v1.SessionRequest{Node: "n1", Deltas: true})
	n2 := w.open(&v1.SessionRequest{Node: "n2", Deltas: true})
	expect(t, "n1's first message", n1.next(), true, []string{"a1"}, nil, 0)
	expect(t, "n2's first message", n2.next(), true, []string{"b1"}, nil, 0)
	// A watch of n2 beside its session's: the same signal that wakes it.
	watch, _, _, _ := w.s.cache.WatchNode("n2", 0)
	defer watch.Close()

	var rev int64
	for i, step := range []func() int64{
		func() int64 { return w.instance("a2", "n1", false) },
		func() int64 { return w.report("a2", "n1") },
		func() int64 { return w.instance("a1", "n1", true) },
		func() int64 { return w.remove("a2") },
		func() int64 { return w.instance("q1", "", false) }, // pending: bound to no node
	} {
		rev = step()
		w.reached(rev)
		if i == 0 {
			expect(t, "a2 on n1", n1.next(), false, []string{"a2"}, nil, rev)
		}
	}
	// a1 lost and a2 deleted: one delta or two, as the session's settle
	// happens to group them; never a2 again for its status.
	var removed []string
	for len(removed) < 2 {
		m := n1.next()
		if m.GetFull() || len(m.GetInstances()) > 0 {
			t.Fatalf("n1 got %v; want only a1 and a2 removed", m)
		}
		removed = append(removed, m.GetRemoved()...)
	}
	if slices.Sort(removed); !slices.Equal(removed, []string{"a1", "a2"}) {
		t.Fatalf("n1 told to remove %v; want a1 and a2", removed)
	}
	select {
	case <-watch.Changed():
		ids, _ := watch.Take()
		t.Fatalf("n2's node watch was signalled by changes on n1 (instances %v)", ids)
	default:
	}
	if n := n2.pending(); n != 0 {
		t.Fatalf("n2's session sent %d messages for changes on n1", n)
	}

	// n2's session is awake for its own changes.
	rev = w.instance("b2", "n2", false)
	expect(t, "b2 on n2", n2.next(), false, []string{"b2"}, nil, rev)
}

// TestStatusOwnershipAndHeartbeatsFromTheCacheOrEtcd: a node may report
// on its own instances only, and heartbeat only as a registered node,
// whether the member's cache holds the records or only etcd does.
func TestStatusOwnershipAndHeartbeatsFromTheCacheOrEtcd(t *testing.T) {
	for _, tc := range []struct {
		name  string
		world func(*testing.T) *sessionWorld
	}{{"cache", newSessionWorld}, {"etcd", newSessionWorldNoCache}} {
		t.Run(tc.name, func(t *testing.T) {
			w := tc.world(t)
			w.instance("p1", "", false) // not placed yet
			report := func(node string, ids ...string) error {
				b := &v1.StatusBatch{Node: node}
				for _, id := range ids {
					b.Statuses = append(b.Statuses, &v1.InstanceStatus{Id: id, State: v1.InstanceState_INSTANCE_STATE_RUNNING})
				}
				_, err := w.api.ReportStatus(w.ctx, b)
				return err
			}
			if err := report("n1", "a1", "gone"); err != nil {
				t.Fatalf("n1 reporting on its own instance and a deleted one: %v", err)
			}
			if st, err := w.s.store.Statuses.Get(w.ctx, "a1"); err != nil || st.Value.GetNode() != "n1" {
				t.Fatalf("a1's status after n1's report: %v, %v", st.Value, err)
			}
			if _, err := w.s.store.Statuses.Get(w.ctx, "gone"); !errdefs.IsNotFound(err) {
				t.Fatalf("a report on a deleted instance was stored: %v", err)
			}
			for _, id := range []string{"b1", "p1"} {
				if err := report("n1", "a1", id); !errdefs.IsPermissionDenied(err) || !strings.Contains(err.Error(), id+", which is not bound to it") {
					t.Fatalf("n1 reporting on %s: %v, want denied", id, err)
				}
			}
			if _, err := w.api.Heartbeat(w.ctx, &v1.HeartbeatRequest{Node: "n1"}); err != nil {
				t.Fatalf("heartbeat of a registered node: %v", err)
			}
			if _, err := w.api.Heartbeat(w.ctx, &v1.HeartbeatRequest{Node: "nobody"}); !errdefs.IsNotFound(err) {
				t.Fatalf("heartbeat of an unknown node: %v, want not found", err)
			}
		})
	}
}

// TestQuietSessionKeepsItsResumePoint: a node that hears nothing while the
// rest of the cluster makes more changes than the member keeps is still
// sent, every SessionRefresh, an empty delta with the current revision, so
// that after a reconnect it resumes rather than gets its whole set again;
// from the revision of its first message (without the refresh) it would
// get the whole set.
func TestQuietSessionKeepsItsResumePoint(t *testing.T) {
	w := newSessionWorldWith(t, func(cfg *Config) {
		cfg.Cache = cache.New(cache.Config{Client: cfg.Store.Client, History: 10})
		cfg.SessionRefresh = 50 * time.Millisecond
	})
	n1 := w.open(&v1.SessionRequest{Node: "n1", Deltas: true})
	first := n1.next()
	expect(t, "first message", first, true, []string{"a1"}, nil, 0)
	var rev int64
	for i := range 30 { // other nodes' changes, three times what the member keeps
		rev = w.instance(fmt.Sprintf("b%02d", i), "n2", false)
	}
	w.reached(rev)
	var refreshed *v1.Assignments
	for refreshed == nil {
		if m := n1.next(); m.GetRevision() >= rev {
			refreshed = m
		}
	}
	expect(t, "the refresh", refreshed, false, nil, nil, rev)
	n1.close()

	resumed := w.open(&v1.SessionRequest{Node: "n1", Deltas: true, ResumeRevision: refreshed.GetRevision()})
	expect(t, "resumed from the refresh", resumed.next(), false, nil, nil, rev)
	resumed.close()
	stale := w.open(&v1.SessionRequest{Node: "n1", Deltas: true, ResumeRevision: first.GetRevision()})
	expect(t, "from the first message's revision", stale.next(), true, []string{"a1"}, nil, rev)
}
