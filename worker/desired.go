package worker

import (
	"maps"
	"slices"
	"sync"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// desiredSet is the node's desired set as the sessions deliver it
// (docs/cluster.md, "Sessions"): a full set replaces it, a delta adds or
// replaces its instances and removes the IDs it names. The reconciler
// takes what changed since its previous pass, so that a delta costs the
// worker what it carries, not the size of the set. The revision of the
// latest message applied is where the next session resumes. The set and
// its revision are kept on the agent's disk as well (persist.go): a
// restarted agent starts from them (restore), resuming its session from
// that revision, and runs them if the control plane cannot be reached.
type desiredSet struct {
	mu    sync.Mutex
	have  bool // a full set has arrived (or was restored from disk)
	held  bool // restored from disk: no pass until a session message or release
	set   map[string]*pb.Instance
	rev   int64
	all   bool                // the next pass looks at every instance
	dirty map[string]struct{} // IDs to look at in the next pass
	// edge: the functions the node may start cold on its local listener,
	// by workload (localcold.go), kept and restored with the instances.
	fns map[string]*pb.LocalFunction
}

func newDesiredSet() *desiredSet {
	return &desiredSet{set: map[string]*pb.Instance{}, dirty: map[string]struct{}{}, fns: map[string]*pb.LocalFunction{}}
}

// apply records one message of a session. A delta before any full set
// (which a control plane never sends) is ignored: it could not say what
// else the node must stop.
func (d *desiredSet) apply(a *pb.Assignments) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if a.GetFull() || d.have {
		d.held = false // the control plane has spoken: converge to what it says
	}
	if a.GetFull() || d.have {
		d.applyFunctions(a)
	}
	if a.GetFull() {
		clear(d.set)
		for _, rec := range a.GetInstances() {
			if rec.GetId() != "" {
				d.set[rec.GetId()] = rec
			}
		}
		clear(d.dirty)
		d.have, d.all = true, true
		d.rev = a.GetRevision()
		return
	}
	if !d.have {
		return
	}
	for _, id := range a.GetRemoved() {
		delete(d.set, id)
		d.dirty[id] = struct{}{}
	}
	for _, rec := range a.GetInstances() {
		if rec.GetId() != "" {
			d.set[rec.GetId()] = rec
			d.dirty[rec.GetId()] = struct{}{}
		}
	}
	d.rev = max(d.rev, a.GetRevision())
}

// applyFunctions records the local functions a carries.
func (d *desiredSet) applyFunctions(a *pb.Assignments) {
	if a.GetLocalFunctionsFull() {
		clear(d.fns)
	}
	for _, name := range a.GetRemovedLocalFunctions() {
		delete(d.fns, name)
	}
	for _, f := range a.GetLocalFunctions() {
		if f.GetWorkload() != "" {
			d.fns[f.GetWorkload()] = f
		}
	}
}

// restore makes set, as of revision rev, the desired set, as a full set
// would, but held: no pass is taken until a session message arrives (it
// builds on this set when it is a delta) or release is called (the control
// plane could not be reached).
func (d *desiredSet) restore(set []*pb.Instance, fns []*pb.LocalFunction, rev int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.set)
	for _, rec := range set {
		if rec.GetId() != "" {
			d.set[rec.GetId()] = rec
		}
	}
	d.applyFunctions(&pb.Assignments{LocalFunctionsFull: true, LocalFunctions: fns})
	clear(d.dirty)
	d.have, d.all, d.held = true, true, true
	d.rev = rev
}

// release lets the reconciler take the set restored from disk; it
// reports whether it was held.
func (d *desiredSet) release() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	was := d.held
	d.held = false
	return was
}

// snapshot is the set, by ID, and its revision; false before any full set.
func (d *desiredSet) snapshot() ([]*pb.Instance, int64, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.have {
		return nil, 0, false
	}
	out := make([]*pb.Instance, 0, len(d.set))
	for _, id := range slices.Sorted(maps.Keys(d.set)) {
		out = append(out, d.set[id])
	}
	return out, d.rev, true
}

// functions is the local functions, by workload.
func (d *desiredSet) functions() []*pb.LocalFunction {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]*pb.LocalFunction, 0, len(d.fns))
	for _, name := range slices.Sorted(maps.Keys(d.fns)) {
		out = append(out, d.fns[name])
	}
	return out
}

// function is the local function of workload, if the node has it.
func (d *desiredSet) function(workload string) (*pb.LocalFunction, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f, ok := d.fns[workload]
	return f, ok
}

// functionRunning names a local function whose module is digest, "" when
// none is.
func (d *desiredSet) functionRunning(digest string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, f := range d.fns {
		if f.GetSpec().GetModuleDigest() == digest {
			return name
		}
	}
	return ""
}

// resumeRevision is the revision a new session resumes from: that of the
// latest message applied, or 0 before any full set.
func (d *desiredSet) resumeRevision() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.have {
		return 0
	}
	return d.rev
}

// touch makes the next pass look at id again (an instance that was
// stopped, and may be wanted again meanwhile).
func (d *desiredSet) touch(id string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dirty[id] = struct{}{}
}

// pass is what one reconciler pass looks at: with all, want is the whole
// set; otherwise want maps each ID that changed to its record, nil when
// it left the set.
type pass struct {
	want map[string]*pb.Instance
	all  bool
	rev  int64
}

// take returns the next pass (everything when all is asked for), and
// false when there is nothing to do yet.
func (d *desiredSet) take(all bool) (pass, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.have || d.held {
		return pass{}, false
	}
	p := pass{all: all || d.all, rev: d.rev}
	if p.all {
		p.want = maps.Clone(d.set)
	} else {
		p.want = make(map[string]*pb.Instance, len(d.dirty))
		for id := range d.dirty {
			p.want[id] = d.set[id]
		}
	}
	clear(d.dirty)
	d.all = false
	return p, true
}
