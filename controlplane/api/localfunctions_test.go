package api

import (
	"slices"
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// The sessions of nodes that serve their functions locally (edge,
// localfunctions.go): which functions they hear of, and when.

// localNode writes node name as a worker with a local listener (local)
// registers it, with labels.
func (w *sessionWorld) localNode(name string, local bool, labels map[string]string) int64 {
	w.t.Helper()
	op, err := w.s.store.Nodes.PutOp(name, &v1.Node{Name: name, Runtimes: []string{"wasm"}, Arch: "amd64", Os: "linux", Labels: labels, LocalHttp: local})
	if err != nil {
		w.t.Fatal(err)
	}
	return w.commit(op)
}

// function writes a routed, autoscaled function at generation gen, kept
// on nodes labelled selector.
func (w *sessionWorld) function(name string, gen int64, selector map[string]string, edit func(*v1.WorkloadSpec)) int64 {
	w.t.Helper()
	spec := &v1.WorkloadSpec{ModuleDigest: "sha256:" + name, Http: &v1.HttpTrigger{Route: "/" + name},
		Autoscale: &v1.Autoscale{MaxReplicas: 3}, Placement: &v1.Placement{Selector: selector}}
	if edit != nil {
		edit(spec)
	}
	op, err := w.s.store.Workloads.PutOp(name, &v1.Workload{Name: name, Generation: gen, Spec: spec})
	if err != nil {
		w.t.Fatal(err)
	}
	return w.commit(op)
}

func localNames(fns []*v1.LocalFunction) []string {
	out := make([]string, len(fns))
	for i, f := range fns {
		out[i] = f.GetWorkload()
	}
	return out
}

// expectLocal fails unless m carries exactly these local functions and
// removals (full: the whole set).
func expectLocal(t *testing.T, what string, m *v1.Assignments, full bool, fns, removed []string) {
	t.Helper()
	if m.GetLocalFunctionsFull() != full || !slices.Equal(localNames(m.GetLocalFunctions()), fns) || !slices.Equal(m.GetRemovedLocalFunctions(), removed) {
		t.Fatalf("%s: got local functions full=%v %v removed %v; want full=%v %v removed %v", what,
			m.GetLocalFunctionsFull(), localNames(m.GetLocalFunctions()), m.GetRemovedLocalFunctions(), full, fns, removed)
	}
}

// TestLocalNodeSessionCarriesItsFunctions: a node with a local listener
// gets, in its first message, every routed function its placement admits
// (with its config files resolved), and then each function added,
// changed to a new generation or removed, as well as those its own
// labels let in or out; a change of replicas alone sends nothing; a node
// without a local listener hears of no function.
func TestLocalNodeSessionCarriesItsFunctions(t *testing.T) {
	w := newSessionWorld(t)
	w.localNode("edge", true, map[string]string{"site": "a"})
	w.localNode("cloud", false, map[string]string{"site": "a"})
	op, err := w.s.store.Configs.PutOp("cfg", &v1.Config{Name: "cfg", Data: map[string]string{"greeting": "hi"}})
	if err != nil {
		t.Fatal(err)
	}
	w.commit(op)
	w.function("fa", 1, map[string]string{"site": "a"}, func(s *v1.WorkloadSpec) { s.ConfigFiles = []string{"cfg"} })
	w.function("fb", 1, map[string]string{"site": "b"}, nil)
	w.function("fany", 1, nil, nil)
	w.function("stopped", 1, nil, func(s *v1.WorkloadSpec) { s.Autoscale = nil })                      // replicas 0, not autoscaled
	w.function("svc", 1, nil, func(s *v1.WorkloadSpec) { s.Port = 8080 })                              // a Wasm service
	w.function("arm", 1, nil, func(s *v1.WorkloadSpec) { s.Placement.Arch = []string{"arm64"} })       // another architecture
	rev := w.function("fixed", 1, nil, func(s *v1.WorkloadSpec) { s.Autoscale = nil; s.Replicas = 2 }) // replicas elsewhere
	w.reached(rev)

	edge := w.open(&v1.SessionRequest{Node: "edge", Deltas: true})
	first := edge.next()
	expectLocal(t, "first message", first, true, []string{"fa", "fany", "fixed"}, nil)
	if f := first.GetLocalFunctions()[0].GetSpec().GetFiles(); len(f) != 1 || f[0].GetPath() != "/config/cfg/greeting" || string(f[0].GetData()) != "hi" {
		t.Fatalf("fa's config file is not resolved: %v", f)
	}
	cloud := w.open(&v1.SessionRequest{Node: "cloud", Deltas: true})
	expectLocal(t, "a node without a local listener", cloud.next(), false, nil, nil)

	w.function("fb", 2, map[string]string{"site": "a"}, nil) // now admits edge
	expectLocal(t, "a function changed to admit the node", edge.next(), false, []string{"fb"}, nil)

	w.function("fany", 1, nil, func(s *v1.WorkloadSpec) { s.Replicas = 3 }) // replicas only: same generation
	w.function("fnew", 1, nil, nil)
	expectLocal(t, "a new function (the replica change before it sends nothing)", edge.next(), false, []string{"fnew"}, nil)

	w.function("fa", 2, map[string]string{"site": "b"}, nil)
	expectLocal(t, "a function changed to exclude the node", edge.next(), false, nil, []string{"fa"})

	w.commit(w.s.store.Workloads.DeleteOp("fnew"))
	expectLocal(t, "a deleted function", edge.next(), false, nil, []string{"fnew"})

	w.localNode("edge", true, map[string]string{"site": "b"})
	expectLocal(t, "the node's labels changed", edge.next(), false, []string{"fa"}, []string{"fb"})

	// The cloud node heard of none of it; nor did an instance change
	// reach the edge node's functions.
	rev = w.instance("c1", "cloud", false)
	m := cloud.next()
	expect(t, "the cloud node's delta", m, false, []string{"c1"}, nil, rev)
	expectLocal(t, "the cloud node's delta", m, false, nil, nil)
	if edge.pending() != 0 {
		t.Fatalf("the edge node got %d messages of the cloud node's change", edge.pending())
	}
}

// TestLocalNodeSessionResumesWithItsWholeFunctionSet: a session that
// resumes from a revision gets only the instances that changed, but its
// whole set of local functions again.
func TestLocalNodeSessionResumesWithItsWholeFunctionSet(t *testing.T) {
	w := newSessionWorld(t)
	w.localNode("edge", true, nil)
	w.function("f1", 1, nil, nil)
	rev := w.instance("e1", "edge", false)
	w.reached(rev)
	s := w.open(&v1.SessionRequest{Node: "edge", Deltas: true})
	m := s.next()
	expect(t, "first message", m, true, []string{"e1"}, nil, rev)
	expectLocal(t, "first message", m, true, []string{"f1"}, nil)
	s.close()

	w.function("f2", 1, nil, nil)
	rev = w.instance("e2", "edge", false)
	w.reached(rev)
	s = w.open(&v1.SessionRequest{Node: "edge", Deltas: true, ResumeRevision: m.GetRevision()})
	m = s.next()
	expect(t, "resumed", m, false, []string{"e2"}, nil, rev)
	expectLocal(t, "resumed", m, true, []string{"f1", "f2"}, nil)
}

// TestLocalNodeMayFetchItsFunctionsModules: a node may fetch the module
// of a function of its local set, naming it; not another's, nor may a
// node without a local listener.
func TestLocalNodeMayFetchItsFunctionsModules(t *testing.T) {
	w := newSessionWorld(t)
	w.localNode("edge", true, map[string]string{"site": "a"})
	w.localNode("cloud", false, map[string]string{"site": "a"})
	w.function("fa", 1, map[string]string{"site": "a"}, nil)
	rev := w.function("fb", 1, map[string]string{"site": "b"}, nil)
	w.reached(rev)
	for _, c := range []struct {
		node, fn, digest string
		want             bool
	}{
		{"edge", "fa", "sha256:fa", true},
		{"edge", "fa", "sha256:fb", false}, // not that function's module
		{"edge", "fb", "sha256:fb", false}, // its placement excludes the node
		{"edge", "", "sha256:fa", false},   // no function named, no instance
		{"cloud", "fa", "sha256:fa", false},
	} {
		if got := w.api.nodeMayFetch(c.node, &v1.FetchBlobRequest{Digest: c.digest, LocalFunction: c.fn}); got != c.want {
			t.Errorf("node %s fetching %s for %q: got %v, want %v", c.node, c.digest, c.fn, got, c.want)
		}
	}
}
