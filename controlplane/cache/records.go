package cache

import (
	"github.com/wasmorch/wasmorch/controlplane/scheduler"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// The records a reader gets are copies of the cache's entries; the
// messages they point to are shared and must never be modified (clone
// one before changing it, as a write does anyway).

// Workload is a workload as the cache holds it, with its instance counts.
type Workload struct {
	Value       *v1.Workload
	ModRevision int64
	Counts      Counts
}

// Counts are a workload's instances as `get workloads` shows them: Total
// not lost (terminating ones included: they still run), Current of its
// generation (not lost, not terminating), Ready of those, ready.
type Counts struct {
	Total, Current, Ready int32
}

// Instance is an instance with its latest status report.
type Instance struct {
	Value       *v1.Instance
	ModRevision int64
	// Status is nil until the instance's node reports on it.
	Status            *v1.InstanceStatus
	StatusModRevision int64
	// State is the state users see (EffectiveState).
	State v1.InstanceState

	// What the entry contributes to its workload's counts and its node's
	// usage, kept so that a change subtracts exactly what was added.
	counted   uint8
	usedNode  string
	usedMem   int64
	usedMilli int64
	usedPort  int32
}

// Node is a node with its liveness and what its instances hold.
type Node struct {
	Value       *v1.Node
	ModRevision int64
	// Alive is true while the node's liveness key exists (its lease is
	// renewed by heartbeats); Lease is that key's lease.
	Alive bool
	Lease int64
	// Used is what the instances bound to it (not lost) reserve; a
	// terminating instance holds its share until its node reports it
	// stopped.
	Used Usage
	// Ports are the node's own TCP ports its instances (bound, not lost,
	// as for Used) serve on (services: --tcp), each with how many hold it.
	// Shared: it is replaced, never modified, when they change.
	Ports map[int32]int32
}

// Usage is what a node's instances reserve, as the scheduler counts it.
type Usage = scheduler.Usage

// StoredConfig is a config record.
type StoredConfig struct {
	Value       *v1.Config
	ModRevision int64
}

// StoredSecret is a secret record (sealed).
type StoredSecret struct {
	Value       *v1.Secret
	ModRevision int64
}

const (
	countedTotal uint8 = 1 << iota
	countedCurrent
	countedReady
)

// IsReady says whether an instance is doing its job: running (and not
// failing its health check), or, for a command (restart on-failure or
// never), its last run completed; its node must be alive and the status
// its own, and the control plane must still want it (not terminating).
// A service (restart always) that exited 0 is down until its restart
// runs: not ready.
func IsReady(inst *v1.Instance, st *v1.InstanceStatus, alive bool) bool {
	if inst.GetNode() == "" || inst.GetLostUnixNano() != 0 || inst.GetTerminatingUnixNano() != 0 || !alive || st == nil || st.GetNode() != inst.GetNode() {
		return false
	}
	switch st.GetState() {
	case v1.InstanceState_INSTANCE_STATE_RUNNING:
		return !st.GetUnhealthy()
	case v1.InstanceState_INSTANCE_STATE_SUCCEEDED:
		return CompletesOnSuccess(inst.GetSpec().GetRestart())
	}
	return false
}

// CompletesOnSuccess says whether a run that exits 0 is done under a
// restart policy (on-failure, never): a command that completed. Under
// always (and unspecified, which is always) the instance is a service,
// run again after any exit.
func CompletesOnSuccess(p v1.RestartPolicy) bool {
	return p == v1.RestartPolicy_RESTART_POLICY_ON_FAILURE || p == v1.RestartPolicy_RESTART_POLICY_NEVER
}

// EffectiveState is the state users see: Pending until placed, Lost while
// the node is not alive or once the instance is marked lost, Terminating
// once marked so until its node reports it Stopped, Scheduled until the
// node reports, then what it reports.
func EffectiveState(inst *v1.Instance, st *v1.InstanceStatus, alive bool) v1.InstanceState {
	switch {
	case inst.GetNode() == "":
		return v1.InstanceState_INSTANCE_STATE_PENDING
	case !alive || inst.GetLostUnixNano() != 0:
		return v1.InstanceState_INSTANCE_STATE_LOST
	case inst.GetTerminatingUnixNano() != 0:
		if StoppedOnNode(inst, st) {
			return v1.InstanceState_INSTANCE_STATE_STOPPED
		}
		return v1.InstanceState_INSTANCE_STATE_TERMINATING
	case st == nil || st.GetNode() != inst.GetNode():
		return v1.InstanceState_INSTANCE_STATE_SCHEDULED
	}
	return st.GetState()
}

// StoppedOnNode says whether the node an instance is bound to has
// reported it stopped: nothing of it runs there any more.
func StoppedOnNode(inst *v1.Instance, st *v1.InstanceStatus) bool {
	return st != nil && inst.GetNode() != "" && st.GetNode() == inst.GetNode() && st.GetState() == v1.InstanceState_INSTANCE_STATE_STOPPED
}

// countsOf is what an instance adds to its workload's counts.
func countsOf(inst *v1.Instance, st *v1.InstanceStatus, alive bool, generation int64) uint8 {
	if inst.GetLostUnixNano() != 0 {
		return 0 // replaced: it counts no more
	}
	c := countedTotal
	if inst.GetTerminatingUnixNano() != 0 {
		return c // leaving, but still running until its node says it stopped
	}
	if inst.GetGeneration() == generation {
		c |= countedCurrent
		if IsReady(inst, st, alive) {
			c |= countedReady
		}
	}
	return c
}

func (c *Counts) add(bits uint8, sign int32) {
	if bits&countedTotal != 0 {
		c.Total += sign
	}
	if bits&countedCurrent != 0 {
		c.Current += sign
	}
	if bits&countedReady != 0 {
		c.Ready += sign
	}
}
