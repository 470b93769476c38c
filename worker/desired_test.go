package worker

import (
	"slices"
	"testing"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func functionNames(fns []*pb.LocalFunction) []string {
	out := make([]string, len(fns))
	for i, f := range fns {
		out[i] = f.GetWorkload()
	}
	return out
}

// TestDesiredSetKeepsLocalFunctions (edge): the desired set takes the
// local functions of a session's messages as it takes instances — a
// delta before any full set is ignored, a whole set replaces them, a
// delta adds, replaces and removes — and restores them with the set.
func TestDesiredSetKeepsLocalFunctions(t *testing.T) {
	fn := func(name string, gen int64) *pb.LocalFunction {
		return &pb.LocalFunction{Workload: name, Generation: gen, Spec: &pb.WorkloadSpec{ModuleDigest: "sha256:" + name}}
	}
	d := newDesiredSet()
	d.apply(&pb.Assignments{Revision: 1, LocalFunctions: []*pb.LocalFunction{fn("early", 1)}})
	if got := functionNames(d.functions()); len(got) != 0 {
		t.Fatalf("a delta before any full set gave %v", got)
	}
	d.apply(&pb.Assignments{Full: true, Revision: 2, LocalFunctionsFull: true, LocalFunctions: []*pb.LocalFunction{fn("a", 1), fn("b", 1)}})
	d.apply(&pb.Assignments{Revision: 3, LocalFunctions: []*pb.LocalFunction{fn("c", 1), fn("a", 2)}, RemovedLocalFunctions: []string{"b"}})
	if got := functionNames(d.functions()); !slices.Equal(got, []string{"a", "c"}) {
		t.Fatalf("after a delta: %v, want [a c]", got)
	}
	if f, _ := d.function("a"); f.GetGeneration() != 2 {
		t.Fatalf("a at generation %d after a delta with its generation 2", f.GetGeneration())
	}
	if got := d.functionRunning("sha256:c"); got != "c" {
		t.Fatalf("the local function of sha256:c: %q", got)
	}
	// A resumed session's first message: a delta of instances, the whole
	// set of functions.
	d.apply(&pb.Assignments{Revision: 4, LocalFunctionsFull: true, LocalFunctions: []*pb.LocalFunction{fn("d", 1)}})
	if got := functionNames(d.functions()); !slices.Equal(got, []string{"d"}) {
		t.Fatalf("after a whole set of functions in a delta: %v, want [d]", got)
	}

	r := newDesiredSet()
	r.restore(nil, d.functions(), 4)
	if got := functionNames(r.functions()); !slices.Equal(got, []string{"d"}) {
		t.Fatalf("restored: %v, want [d]", got)
	}
}
