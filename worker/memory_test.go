package worker

import (
	"strings"
	"testing"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestAssignmentsBeyondTheMemoryBudgetWait: whatever it is assigned, the
// worker runs no more instances than its allocatable memory holds at
// their memory limits; the others report why, and start as soon as an
// instance leaving the node gives its memory back.
func TestAssignmentsBeyondTheMemoryBudgetWait(t *testing.T) {
	e := startEnv(t, envOptions{config: func(c *Config) { c.MemoryBytes, c.ReservedMemoryBytes = 1<<30, 512<<20 }})
	big := func(id string) *pb.Instance {
		r := rec(id, always)
		r.Spec.MemoryBytes = 200 << 20
		return r
	}
	ids := []string{"a", "b", "c"}
	e.cp.setDesired(big("a"), big("b"), big("c"))

	var waiting string
	eventually(t, "two running and one waiting for memory", func() bool {
		waiting = ""
		for _, id := range ids {
			if st := e.cp.status(id); st.GetReason() == ReasonInsufficientMemory {
				waiting = id
			}
		}
		return e.rt.Running() == 2 && waiting != ""
	})
	st := e.cp.status(waiting)
	if st.GetState() != pb.InstanceState_INSTANCE_STATE_STARTING || !strings.Contains(st.GetMessage(), "112 MiB of its 512 MiB of allocatable memory unreserved") ||
		!strings.Contains(st.GetMessage(), "reserves 200 MiB") {
		t.Fatalf("the instance that does not fit reports %v %s: %q", st.GetState(), st.GetReason(), st.GetMessage())
	}
	if e.rt.Latest(waiting) != nil {
		t.Fatalf("%s was started beyond the node's memory", waiting)
	}
	if u := e.w.memory.Usage(); u.Reserved != 400<<20 {
		t.Fatalf("%d MiB reserved, want the 400 MiB of the two running", u.Reserved>>20)
	}

	// One running instance leaves the node: the waiting one starts.
	gone := ""
	for _, id := range ids {
		if id != waiting && gone == "" {
			gone = id
		}
	}
	var keep []*pb.Instance
	for _, id := range ids {
		if id != gone {
			keep = append(keep, big(id))
		}
	}
	e.cp.setDesired(keep...)
	e.waitRunning(waiting)
	eventually(t, "the waiting instance reported running", func() bool {
		return e.cp.status(waiting).GetState() == pb.InstanceState_INSTANCE_STATE_RUNNING
	})
	if u := e.w.memory.Usage(); u.Reserved != 400<<20 || e.rt.Running() != 2 {
		t.Fatalf("%d MiB reserved and %d running, want 400 MiB and 2", u.Reserved>>20, e.rt.Running())
	}
}
