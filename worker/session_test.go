package worker

import (
	"maps"
	"slices"
	"testing"
	"time"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// lastSent is the latest session message the fake control plane sent.
func (f *fakeCP) lastSent(t *testing.T) *pb.Assignments {
	t.Helper()
	sent := f.sentMessages()
	if len(sent) == 0 {
		t.Fatal("no session message sent")
	}
	return sent[len(sent)-1]
}

// nextSent waits for the session message sent after the first n.
func (f *fakeCP) nextSent(t *testing.T, n int) *pb.Assignments {
	t.Helper()
	eventually(t, "a session message", func() bool { return len(f.sentMessages()) > n })
	return f.sentMessages()[n]
}

func ids(insts []*pb.Instance) []string {
	out := make([]string, len(insts))
	for i, in := range insts {
		out[i] = in.GetId()
	}
	slices.Sort(out)
	return out
}

func TestSessionStartsWithAFullSetThenAppliesDeltas(t *testing.T) {
	e := startEnv(t, envOptions{})
	e.cp.setDesired(rec("a", 0), rec("b", 0), rec("c", 0))
	for _, id := range []string{"a", "b", "c"} {
		e.waitRunning(id)
	}
	req := e.cp.sessionRequests()[0]
	if !req.GetDeltas() || req.GetResumeRevision() != 0 {
		t.Fatalf("a new worker's session request %v: want deltas, resuming from nothing", req)
	}

	// a leaves, c moves to generation 2, d arrives: one delta says so.
	c2 := rec("c", 0)
	c2.Generation = 2
	n := len(e.cp.sentMessages())
	e.cp.setDesired(rec("b", 0), c2, rec("d", 0))
	d := e.cp.nextSent(t, n)
	if d.GetFull() || !slices.Equal(ids(d.GetInstances()), []string{"c", "d"}) || !slices.Equal(d.GetRemoved(), []string{"a"}) {
		t.Fatalf("second message %v: want a delta of c and d, removing a", d)
	}
	e.waitRunning("d")
	eventually(t, "a stopped", func() bool { return e.rt.Latest("a").Stopped() && e.workerStatus("a") == nil })
	eventually(t, "c replaced by generation 2", func() bool {
		gen := int64(0)
		e.inspect("c", func(in *instance) {
			if in != nil && in.run != nil {
				gen = in.rec.GetGeneration()
			}
		})
		return gen == 2
	})
	if n := e.rt.Starts("b"); n != 1 {
		t.Fatalf("b, in no delta, started %d times", n)
	}

	// A delta that brings back an instance stopped meanwhile starts it afresh.
	e.cp.setDesired(rec("a", 0), rec("b", 0), c2, rec("d", 0))
	eventually(t, "a started again", func() bool { return e.rt.Starts("a") == 2 })
	if e.rt.Running() != 4 {
		t.Fatalf("%d instances running, want a, b, c and d", e.rt.Running())
	}
}

func TestSessionResumesFromTheLastRevisionApplied(t *testing.T) {
	e := startEnv(t, envOptions{})
	e.cp.setDesired(rec("a", 0), rec("b", 0))
	e.waitRunning("a")
	e.waitRunning("b")
	applied := e.cp.lastSent(t).GetRevision()

	// The session breaks; meanwhile a leaves the set and c joins it.
	e.stopCP()
	eventually(t, "session lost", func() bool { return e.w.agentClient() == nil })
	n := len(e.cp.sentMessages())
	e.cp.setDesired(rec("b", 0), rec("c", 0))
	serveCP(t, e.cp, e.cpAddr)

	eventually(t, "c running", func() bool { return e.rt.Running() == 2 && e.rt.Starts("c") == 1 })
	reqs := e.cp.sessionRequests()
	if got := reqs[len(reqs)-1]; !got.GetDeltas() || got.GetResumeRevision() != applied {
		t.Fatalf("the reconnecting session asked %v, want deltas from revision %d", got, applied)
	}
	first := e.cp.nextSent(t, n)
	if first.GetFull() || !slices.Equal(ids(first.GetInstances()), []string{"c"}) || !slices.Equal(first.GetRemoved(), []string{"a"}) {
		t.Fatalf("first message of the resumed session %v: want only c added and a removed", first)
	}
	eventually(t, "a stopped", func() bool { return e.rt.Latest("a").Stopped() })
	if n := e.rt.Starts("b"); n != 1 {
		t.Fatalf("b started %d times across the resumed session", n)
	}
}

func TestSessionThatCannotResumeGetsAFullSet(t *testing.T) {
	e := startEnv(t, envOptions{})
	e.cp.setDesired(rec("a", 0), rec("b", 0))
	e.waitRunning("a")
	e.waitRunning("b")

	e.stopCP()
	eventually(t, "session lost", func() bool { return e.w.agentClient() == nil })
	n := len(e.cp.sentMessages())
	e.cp.setDesired(rec("b", 0), rec("c", 0))
	e.cp.forgetHistory() // the member no longer keeps the changes since the worker's revision
	serveCP(t, e.cp, e.cpAddr)

	eventually(t, "a fenced, c running", func() bool {
		return e.rt.Latest("a").Stopped() && e.rt.Starts("c") == 1 && e.rt.Running() == 2
	})
	if first := e.cp.nextSent(t, n); !first.GetFull() || !slices.Equal(ids(first.GetInstances()), []string{"b", "c"}) {
		t.Fatalf("first message after the history was lost %v: want a full set", first)
	}
}

func TestDesiredSetAppliesFullSetsAndDeltas(t *testing.T) {
	d := newDesiredSet()
	d.apply(&pb.Assignments{Instances: []*pb.Instance{rec("x", 0)}, Revision: 3})
	if _, ok := d.take(false); ok || d.resumeRevision() != 0 {
		t.Fatal("a delta before any full set was applied")
	}

	d.apply(&pb.Assignments{Full: true, Revision: 5, Instances: []*pb.Instance{rec("a", 0), rec("b", 0)}})
	p, ok := d.take(false)
	if !ok || !p.all || len(p.want) != 2 || p.want["a"] == nil || p.want["b"] == nil {
		t.Fatalf("after a full set: %+v %v, want a pass over a and b", p, ok)
	}

	b2 := rec("b", 0)
	b2.Generation = 2
	d.apply(&pb.Assignments{Revision: 7, Instances: []*pb.Instance{b2, rec("c", 0)}, Removed: []string{"a", "gone"}})
	p, _ = d.take(false)
	if p.all || p.rev != 7 || len(p.want) != 4 || p.want["a"] != nil || p.want["gone"] != nil || p.want["b"] != b2 || p.want["c"] == nil {
		t.Fatalf("after a delta: %+v, want b and c wanted, a and gone not", p)
	}
	if d.resumeRevision() != 7 {
		t.Fatalf("resume from %d, want 7", d.resumeRevision())
	}

	// Nothing changed: a pass looks at nothing, unless asked for all.
	if p, _ = d.take(false); p.all || len(p.want) != 0 {
		t.Fatalf("idle pass %+v", p)
	}
	d.touch("b")
	if p, _ = d.take(false); len(p.want) != 1 || p.want["b"] != b2 {
		t.Fatalf("pass after touching b: %+v", p)
	}
	if p, _ = d.take(true); !p.all || !slices.Equal(slices.Sorted(maps.Keys(p.want)), []string{"b", "c"}) {
		t.Fatalf("a pass over everything: %+v, want b and c", p)
	}

	// A full set replaces everything, whatever came before.
	d.apply(&pb.Assignments{Full: true, Revision: 9, Instances: []*pb.Instance{rec("z", 0)}})
	if p, _ = d.take(false); !p.all || len(p.want) != 1 || p.want["z"] == nil || d.resumeRevision() != 9 {
		t.Fatalf("after a second full set: %+v", p)
	}
}

// stallHeartbeats has the fake's heartbeats go unanswered (as over a link
// that drops everything) until the returned func is called.
func (f *fakeCP) stallHeartbeats() func() {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{})
	f.stalled = ch
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		close(ch)
		f.stalled = nil
	}
}

// TestHeartbeatsWithoutAnswerKeepTheSessionWithinTheNodesGrace: a node
// whose grace is long (a flaky link's, wasmorch.io/lost-after) keeps its
// session through heartbeats that get no answer in time, for half its
// grace; a node at a short grace registers again as soon as one fails.
func TestHeartbeatsWithoutAnswerKeepTheSessionWithinTheNodesGrace(t *testing.T) {
	for _, c := range []struct {
		name  string
		grace time.Duration
		keeps bool
	}{
		{"long grace", 20 * time.Second, true},
		{"short grace", time.Second, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := startEnv(t, envOptions{cp: func(cp *fakeCP) { cp.graceMs = c.grace.Milliseconds() }})
			e.cp.setDesired(rec("a", 0))
			e.waitRunning("a")
			beats := func() int { e.cp.mu.Lock(); defer e.cp.mu.Unlock(); return e.cp.heartbeats }
			resume := e.cp.stallHeartbeats()
			// Two heartbeats in a row time out (each waits a second at most).
			time.Sleep(2500 * time.Millisecond)
			resume()
			n := beats()
			eventually(t, "heartbeats answered again", func() bool { return beats() > n+2 })
			if regs := len(e.cp.registrations()); (regs == 1) != c.keeps {
				t.Fatalf("%d registrations after heartbeats went unanswered for 2.5 s at a grace of %v; want the session kept: %v", regs, c.grace, c.keeps)
			}
			if e.rt.Starts("a") != 1 {
				t.Fatalf("a started %d times", e.rt.Starts("a"))
			}
		})
	}
}
