package simulate

import (
	"sync"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Statuses a hollow node reports, in the words the real worker uses.
const (
	runtimeWasm     = "wasm"
	messageStarting = "preparing the module"
	reasonStopped   = "Stopped"
	messageStopped  = "no longer assigned to this node"
)

// instanceSet is one hollow node's instances and the status changes it
// has not reported yet. An assigned instance is reported Starting, then,
// once that report is acknowledged, Running; one that leaves the set is
// reported Stopped and forgotten. It costs a few dozen bytes per instance
// and no goroutine or timer.
type instanceSet struct {
	node string

	mu        sync.Mutex
	epoch     uint64 // counts updates, to find what a full set left out
	revision  int64  // of the last Assignments applied
	instances map[string]*tracked
	pending   map[string]*pb.InstanceStatus // latest unreported status per instance
}

// tracked is what a hollow node remembers of one instance.
type tracked struct {
	generation    int64
	runtimeReason string
	state         pb.InstanceState // STARTING until its Starting report is acknowledged, then RUNNING
	startedAt     int64            // unix nanoseconds, once RUNNING
	seen          uint64           // the epoch of the last full set that held it
}

func newInstanceSet(node string) *instanceSet {
	return &instanceSet{node: node, instances: map[string]*tracked{}, pending: map[string]*pb.InstanceStatus{}}
}

// update applies one Assignments message. A full set (full) replaces the
// node's set: what it holds is added or kept, what it lacks is removed. A
// delta adds or changes the instances it holds and removes those it names,
// leaving the rest alone. It returns how the number of instances changed.
func (s *instanceSet) update(a *pb.Assignments, full bool, now int64) (delta int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	before := len(s.instances)
	s.epoch++
	for _, rec := range a.GetInstances() {
		if rec.GetId() != "" {
			s.addLocked(rec, now).seen = s.epoch
		}
	}
	if full {
		for id, t := range s.instances {
			if t.seen != s.epoch {
				s.removeLocked(id, now)
			}
		}
	}
	for _, id := range a.GetRemoved() {
		s.removeLocked(id, now)
	}
	s.revision = a.GetRevision()
	return len(s.instances) - before
}

// appliedRevision is the revision of the last Assignments applied, from
// which a new session may resume.
func (s *instanceSet) appliedRevision() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.revision
}

// addLocked starts tracking rec, unless it is tracked at its generation
// already. An instance at a new generation starts again, as the real
// worker stops the old run and starts the new one.
func (s *instanceSet) addLocked(rec *pb.Instance, now int64) *tracked {
	id := rec.GetId()
	if t, ok := s.instances[id]; ok && t.generation == rec.GetGeneration() {
		return t
	}
	t := &tracked{generation: rec.GetGeneration(), runtimeReason: rec.GetRuntimeReason(), state: pb.InstanceState_INSTANCE_STATE_STARTING}
	s.instances[id] = t
	s.pending[id] = s.statusLocked(id, t, now)
	return t
}

// removeLocked forgets an instance, leaving its final Stopped status to
// report.
func (s *instanceSet) removeLocked(id string, now int64) {
	t, ok := s.instances[id]
	if !ok {
		return
	}
	delete(s.instances, id)
	st := s.statusLocked(id, t, now)
	st.State, st.Reason, st.Message = pb.InstanceState_INSTANCE_STATE_STOPPED, reasonStopped, messageStopped
	st.FinishedUnixNano = now
	s.pending[id] = st
}

// statusLocked is the status record of t in its current state.
func (s *instanceSet) statusLocked(id string, t *tracked, now int64) *pb.InstanceStatus {
	st := &pb.InstanceStatus{
		Id:              id,
		Node:            s.node,
		State:           t.state,
		Runtime:         runtimeWasm,
		RuntimeReason:   t.runtimeReason,
		UpdatedUnixNano: now,
	}
	if t.state == pb.InstanceState_INSTANCE_STATE_STARTING {
		st.Message = messageStarting
	} else {
		st.StartedUnixNano = t.startedAt
	}
	return st
}

// take removes and returns up to max unreported statuses (all of them
// when max is 0).
func (s *instanceSet) take(max int) []*pb.InstanceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.pending)
	if max > 0 {
		n = min(n, max)
	}
	if n == 0 {
		return nil
	}
	out := make([]*pb.InstanceStatus, 0, n)
	for id, st := range s.pending {
		out = append(out, st)
		delete(s.pending, id)
		if len(out) == n {
			break
		}
	}
	return out
}

// acknowledged records that batch reached the control plane: an instance
// whose Starting status was in it is now Running, which is the next
// status to report. It returns whether anything is left to report.
func (s *instanceSet) acknowledged(batch []*pb.InstanceStatus, now int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range batch {
		if st.GetState() != pb.InstanceState_INSTANCE_STATE_STARTING {
			continue
		}
		t, ok := s.instances[st.GetId()]
		if _, newer := s.pending[st.GetId()]; !ok || newer || t.state != pb.InstanceState_INSTANCE_STATE_STARTING {
			continue // replaced or removed meanwhile: its own status is pending
		}
		t.state, t.startedAt = pb.InstanceState_INSTANCE_STATE_RUNNING, now
		s.pending[st.GetId()] = s.statusLocked(st.GetId(), t, now)
	}
	return len(s.pending) > 0
}

// putBack returns statuses that could not be sent, unless a newer one
// arrived meanwhile.
func (s *instanceSet) putBack(batch []*pb.InstanceStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range batch {
		if _, newer := s.pending[st.GetId()]; !newer {
			s.pending[st.GetId()] = st
		}
	}
}

// resendAll queues the current status of every instance: after a new
// session the control plane may have missed reports (the real worker
// does the same).
func (s *instanceSet) resendAll(now int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, t := range s.instances {
		if _, ok := s.pending[id]; !ok {
			s.pending[id] = s.statusLocked(id, t, now)
		}
	}
}

// counts returns how many instances the node holds and how many of them
// are Running.
func (s *instanceSet) counts() (total, running int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.instances {
		if t.state == pb.InstanceState_INSTANCE_STATE_RUNNING {
			running++
		}
	}
	return len(s.instances), running
}

func (s *instanceSet) hasPending() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending) > 0
}
