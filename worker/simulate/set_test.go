package simulate

import (
	"maps"
	"slices"
	"testing"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// set is a full desired set of instances at generation 1, by id.
func set(ids ...string) *pb.Assignments {
	a := &pb.Assignments{}
	for _, id := range ids {
		a.Instances = append(a.Instances, &pb.Instance{Id: id, Generation: 1})
	}
	return a
}

// states summarizes statuses as id → state.
func states(sts []*pb.InstanceStatus) map[string]pb.InstanceState {
	out := map[string]pb.InstanceState{}
	for _, st := range sts {
		out[st.GetId()] = st.GetState()
	}
	return out
}

const (
	starting = pb.InstanceState_INSTANCE_STATE_STARTING
	running  = pb.InstanceState_INSTANCE_STATE_RUNNING
	stopped  = pb.InstanceState_INSTANCE_STATE_STOPPED
)

// TestInstanceSetReportsStartingThenRunning walks one instance through
// what the control plane sees of it: Starting, then, once that report is
// acknowledged, Running with its start time, then nothing more.
func TestInstanceSetReportsStartingThenRunning(t *testing.T) {
	s := newInstanceSet("n1")
	if d := s.update(set("a"), true, 10); d != 1 {
		t.Fatalf("update added %d instances, want 1", d)
	}
	first := s.take(0)
	if len(first) != 1 || first[0].GetState() != starting || first[0].GetNode() != "n1" || first[0].GetRuntime() != "wasm" || first[0].GetMessage() == "" || first[0].GetUpdatedUnixNano() != 10 {
		t.Fatalf("first report = %v, want a for n1 Starting (wasm, with a message, updated at 10)", first)
	}
	if !s.acknowledged(first, 20) {
		t.Fatal("nothing pending after the Starting report was acknowledged, want Running")
	}
	second := s.take(0)
	if len(second) != 1 || second[0].GetState() != running || second[0].GetStartedUnixNano() != 20 {
		t.Fatalf("second report = %v, want a Running since 20", second)
	}
	if s.acknowledged(second, 30) {
		t.Fatalf("something still pending after Running was acknowledged: %v", s.take(0))
	}
	if total, run := s.counts(); total != 1 || run != 1 {
		t.Errorf("counts = %d total, %d running; want 1, 1", total, run)
	}
	// The same set again changes nothing.
	if d := s.update(set("a"), true, 40); d != 0 || s.hasPending() {
		t.Errorf("the same set again: delta %d, pending %v; want 0 and nothing", d, s.take(0))
	}
}

// TestInstanceSetUpdate is the set-update logic: what a full desired set
// adds, keeps and removes, and what that leaves to report.
func TestInstanceSetUpdate(t *testing.T) {
	for _, tc := range []struct {
		name        string
		before      []string // instances the node runs (reported Running)
		next        *pb.Assignments
		delta       bool // next is a delta, not a full set
		wantDelta   int
		wantPending map[string]pb.InstanceState
		wantHeld    []string
	}{
		{
			name:        "new instances are reported Starting",
			before:      []string{"a"},
			next:        set("a", "b", "c"),
			wantDelta:   2,
			wantPending: map[string]pb.InstanceState{"b": starting, "c": starting},
			wantHeld:    []string{"a", "b", "c"},
		},
		{
			name:        "instances that leave the set are reported Stopped and forgotten",
			before:      []string{"a", "b", "c"},
			next:        set("b"),
			wantDelta:   -2,
			wantPending: map[string]pb.InstanceState{"a": stopped, "c": stopped},
			wantHeld:    []string{"b"},
		},
		{
			name:        "an empty set stops everything",
			before:      []string{"a", "b"},
			next:        &pb.Assignments{},
			wantDelta:   -2,
			wantPending: map[string]pb.InstanceState{"a": stopped, "b": stopped},
		},
		{
			name:        "a new generation of an instance starts again",
			before:      []string{"a", "b"},
			next:        &pb.Assignments{Instances: []*pb.Instance{{Id: "a", Generation: 2}, {Id: "b", Generation: 1}}},
			wantDelta:   0,
			wantPending: map[string]pb.InstanceState{"a": starting},
			wantHeld:    []string{"a", "b"},
		},
		{
			name:        "a delta adds and changes what it holds and keeps the rest",
			before:      []string{"a", "b"},
			next:        &pb.Assignments{Revision: 42, Instances: []*pb.Instance{{Id: "c", Generation: 1}, {Id: "a", Generation: 2}}},
			delta:       true,
			wantDelta:   1,
			wantPending: map[string]pb.InstanceState{"a": starting, "c": starting},
			wantHeld:    []string{"a", "b", "c"},
		},
		{
			name:        "a delta removes what it names",
			before:      []string{"a", "b", "c"},
			next:        &pb.Assignments{Revision: 43, Removed: []string{"a", "unknown"}},
			delta:       true,
			wantDelta:   -1,
			wantPending: map[string]pb.InstanceState{"a": stopped},
			wantHeld:    []string{"b", "c"},
		},
		{
			name:        "a record without an id is ignored",
			next:        &pb.Assignments{Instances: []*pb.Instance{{Generation: 1}, {Id: "a", Generation: 1}}},
			wantDelta:   1,
			wantPending: map[string]pb.InstanceState{"a": starting},
			wantHeld:    []string{"a"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := runningSet(t, tc.before...)
			if d := s.update(tc.next, !tc.delta, 100); d != tc.wantDelta {
				t.Errorf("delta = %d, want %d", d, tc.wantDelta)
			}
			if got := states(s.take(0)); !maps.Equal(got, tc.wantPending) {
				t.Errorf("pending = %v, want %v", got, tc.wantPending)
			}
			held := slices.Sorted(maps.Keys(s.instances))
			if !slices.Equal(held, tc.wantHeld) {
				t.Errorf("held = %v, want %v", held, tc.wantHeld)
			}
			if s.appliedRevision() != tc.next.GetRevision() {
				t.Errorf("applied revision = %d, want %d", s.appliedRevision(), tc.next.GetRevision())
			}
		})
	}
}

// runningSet is a set whose instances have been reported Running.
func runningSet(t *testing.T, ids ...string) *instanceSet {
	t.Helper()
	s := newInstanceSet("n1")
	s.update(set(ids...), true, 1)
	s.acknowledged(s.take(0), 2)
	s.acknowledged(s.take(0), 3)
	if s.hasPending() {
		t.Fatal("statuses pending after Starting and Running were acknowledged")
	}
	return s
}

// TestInstanceSetRemovedBeforeReported: an instance that leaves the set
// before its Starting report went out is reported Stopped only, and an
// acknowledgement of a Starting report that raced its removal does not
// bring it back.
func TestInstanceSetRemovedBeforeReported(t *testing.T) {
	s := newInstanceSet("n1")
	s.update(set("a", "b"), true, 1)
	inFlight := s.take(0) // a and b Starting, being sent
	s.update(set("b"), true, 2)
	s.acknowledged(inFlight, 3)
	got := states(s.take(0))
	if want := map[string]pb.InstanceState{"a": stopped, "b": running}; !maps.Equal(got, want) {
		t.Errorf("after a left the set during its Starting report: pending = %v, want %v", got, want)
	}
	if _, held := s.instances["a"]; held {
		t.Error("a is still held after it left the set")
	}
}

// TestInstanceSetFailedReportIsRetried: statuses that could not be sent
// go back, unless a newer one for the same instance came meanwhile.
func TestInstanceSetFailedReportIsRetried(t *testing.T) {
	s := newInstanceSet("n1")
	s.update(set("a", "b"), true, 1)
	failed := s.take(0)
	s.update(set("b"), true, 2) // a: Stopped is newer than the Starting that failed
	s.putBack(failed)
	got := states(s.take(0))
	if want := map[string]pb.InstanceState{"a": stopped, "b": starting}; !maps.Equal(got, want) {
		t.Errorf("pending after a failed report = %v, want %v", got, want)
	}
}

// TestInstanceSetBatches: take returns at most max statuses, the rest
// stays for the next report.
func TestInstanceSetBatches(t *testing.T) {
	s := newInstanceSet("n1")
	s.update(set("a", "b", "c", "d", "e"), true, 1)
	if got := len(s.take(2)); got != 2 {
		t.Errorf("take(2) returned %d statuses", got)
	}
	if got := len(s.take(0)); got != 3 {
		t.Errorf("take(0) returned %d statuses, want the 3 left", got)
	}
}

// TestInstanceSetResendAll: after a reconnection every instance's current
// status is reported again, without replacing one still pending.
func TestInstanceSetResendAll(t *testing.T) {
	s := runningSet(t, "a", "b")
	s.update(set("a", "b", "c"), true, 10) // c Starting, pending
	s.resendAll(20)
	got := states(s.take(0))
	if want := map[string]pb.InstanceState{"a": running, "b": running, "c": starting}; !maps.Equal(got, want) {
		t.Errorf("pending after resendAll = %v, want %v", got, want)
	}
}
