package api

import (
	"context"
	"errors"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// agentAPI serves the Agent service the workers speak.
type agentAPI struct {
	v1.UnimplementedAgentServer
	s *Server

	mu     sync.Mutex
	leases map[string]nodeLease // node name → its liveness lease
}

// nodeLease is a node's liveness lease and the TTL it was granted with.
type nodeLease struct {
	id  clientv3.LeaseID
	ttl int64 // seconds
}

// Register records a node and starts its liveness lease. A node reports
// only what it observes of itself — the addresses of its services, its
// capacity, runtimes and version, and its arch and OS the first time; its
// labels come from its join token or an admin, and cordoning and draining
// are an admin's (see registration). A member may register any node as it
// says (in-process tests play many nodes so).
func (a *agentAPI) Register(ctx context.Context, req *v1.RegisterRequest) (*v1.RegisterResponse, error) {
	rep := req.GetNode()
	if err := workloads.ValidateNodeName(rep.GetName()); err != nil {
		return nil, err
	}
	for k, v := range rep.GetLabels() {
		if err := workloads.ValidateLabel(k, v); err != nil {
			return nil, errdefs.Invalidf("node %s: %v", rep.GetName(), err)
		}
	}
	caller, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	var n *v1.Node
	var before []*v1.NodeCondition
	// Compare-and-swap, so that a cordon or drain racing the registration
	// is kept rather than overwritten.
	for attempt := 0; ; attempt++ {
		guard := clientv3.Compare(clientv3.CreateRevision(a.s.store.Nodes.Key(rep.GetName())), "=", 0)
		cur, err := a.s.store.Nodes.Get(ctx, rep.GetName())
		before = cur.Value.GetConditions()
		switch {
		case err == nil:
			guard = a.s.store.Nodes.Unchanged(rep.GetName(), cur.ModRevision)
		case errdefs.IsNotFound(err):
			cur.Value = nil
		default:
			return nil, err
		}
		if n, err = registration(cur.Value, rep, caller.Role == auth.RoleNode); err != nil {
			return nil, err
		}
		op, err := a.s.store.Nodes.PutOp(n.GetName(), n)
		if err != nil {
			return nil, err
		}
		resp, err := a.s.store.Client.Txn(ctx).If(guard).Then(op).Commit()
		if err != nil {
			return nil, errdefs.Unavailablef("register node %s: %v", n.GetName(), err)
		}
		if resp.Succeeded {
			break
		}
		if attempt >= 5 {
			return nil, errdefs.Conflictf("node %s changed during registration; try again", n.GetName())
		}
	}
	a.conditionEvents(ctx, n.GetName(), before, n.GetConditions())
	grace := workloads.NodeGrace(n.GetLabels(), a.s.cfg.NodeGrace)
	if err := a.renew(ctx, n.GetName(), grace, true); err != nil {
		return nil, err
	}
	a.s.log.Info("node registered", "node", n.GetName(), "address", n.GetAddress(), "runtimes", n.GetRuntimes(), "labels", FormatLabels(n.GetLabels()))
	return &v1.RegisterResponse{
		HeartbeatIntervalMs: a.s.cfg.HeartbeatInterval.Milliseconds(),
		NodeGraceMs:         grace.Milliseconds(),
		Labels:              n.GetLabels(),
	}, nil
}

// registration is the record a registration leaves: with byNode (the
// caller is the node itself), prev (nil: none yet) with what the node
// observes of itself from rep; otherwise rep as it is, keeping an admin's
// cordon and drain.
func registration(prev, rep *v1.Node, byNode bool) (*v1.Node, error) {
	now := time.Now().UnixNano()
	if !byNode {
		n := proto.Clone(rep).(*v1.Node)
		n.Cordoned, n.Draining = prev.GetCordoned(), prev.GetDraining() // an operator's choice survives re-registration
		n.Conditions = cleanConditions(rep.GetConditions())
		n.RegisteredUnixNano = now
		return n, nil
	}
	n := &v1.Node{Name: rep.GetName()}
	if prev != nil {
		n = proto.Clone(prev).(*v1.Node)
	}
	for _, f := range []struct{ what, was, now string }{{"architecture", n.GetArch(), rep.GetArch()}, {"OS", n.GetOs(), rep.GetOs()}} {
		if f.was != "" && f.was != f.now {
			return nil, errdefs.Preconditionf("node %s registered with %s %s and now reports %s: a node cannot change it; remove the node ('wasmorch node rm %s') and join it again", n.GetName(), f.what, f.was, f.now, n.GetName())
		}
	}
	n.Arch, n.Os = rep.GetArch(), rep.GetOs()
	n.Address, n.HttpAddress = rep.GetAddress(), rep.GetHttpAddress()
	n.Capacity, n.Runtimes, n.Version = rep.GetCapacity(), rep.GetRuntimes(), rep.GetVersion()
	n.Conditions = cleanConditions(rep.GetConditions())   // what holds now: disk pressure
	n.MaxScratchBytes = max(rep.GetMaxScratchBytes(), 0)  // state
	n.AllowedMounts = cleanMounts(rep.GetAllowedMounts()) // state
	n.LocalHttp = rep.GetLocalHttp()                      // edge: its session carries its local functions
	n.RegisteredUnixNano = now
	return n, nil
}

// Heartbeat keeps the node's lease alive, and its record's conditions
// (disk pressure) as the worker reports them. The node's record is looked
// up in the member's cache; etcd is asked only when the cache does not
// hold it (registered a moment ago through another member, or removed),
// and written only when the conditions changed.
func (a *agentAPI) Heartbeat(ctx context.Context, req *v1.HeartbeatRequest) (*v1.HeartbeatResponse, error) {
	var rec *v1.Node
	if n, ok := a.s.cache.Node(req.GetNode()); ok {
		rec = n.Value
	} else {
		cur, err := a.s.store.Nodes.Get(ctx, req.GetNode())
		if err != nil {
			return nil, err // unknown node: the worker registers again
		}
		rec = cur.Value
	}
	held := rec.GetConditions()
	if err := a.renew(ctx, req.GetNode(), workloads.NodeGrace(rec.GetLabels(), a.s.cfg.NodeGrace), false); err != nil {
		return nil, err
	}
	if conds := cleanConditions(req.GetConditions()); !sameConditions(held, conds) {
		// Not the heartbeat's failure: the next one tries again.
		if err := a.setConditions(ctx, req.GetNode(), conds); err != nil {
			a.s.log.Warn("could not record a node's conditions", "node", req.GetNode(), "err", err)
		}
	}
	a.s.heartbeats.Store(req.GetNode(), time.Now())
	return &v1.HeartbeatResponse{}, nil
}

// renew refreshes the node's lease, or grants a new one lasting grace
// (fresh is true, the lease expired, another member granted it, or the
// node's grace changed: its wasmorch.io/lost-after label) and binds the
// alive key.
func (a *agentAPI) renew(ctx context.Context, node string, grace time.Duration, fresh bool) error {
	ttl := int64(math.Ceil(grace.Seconds()))
	a.mu.Lock()
	cur, ok := a.leases[node]
	a.mu.Unlock()
	if ok && !fresh && cur.ttl == ttl {
		_, err := a.s.store.Client.KeepAliveOnce(ctx, cur.id)
		if err == nil {
			return nil
		}
		if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return errdefs.Unavailablef("renew lease of node %s: %v", node, err)
		}
	}
	lease, err := a.s.store.Client.Grant(ctx, ttl)
	if err != nil {
		return errdefs.Unavailablef("grant lease for node %s: %v", node, err)
	}
	if _, err := a.s.store.Client.Put(ctx, store.AlivePrefix+node, "", clientv3.WithLease(lease.ID)); err != nil {
		return errdefs.Unavailablef("mark node %s alive: %v", node, err)
	}
	a.mu.Lock()
	old, hadOld := a.leases[node]
	a.leases[node] = nodeLease{id: lease.ID, ttl: ttl}
	a.mu.Unlock()
	if hadOld && old.id != lease.ID {
		_, _ = a.s.store.Client.Revoke(ctx, old.id)
	}
	return nil
}

// defaultSessionRefresh is how long a session may stay silent (Config.SessionRefresh).
const defaultSessionRefresh = 30 * time.Second

// Session streams the node's desired set (docs/cluster.md, "Sessions"):
// the whole set first, then, for a worker that asked for deltas, only the
// instances that changed and the IDs that left the set; a worker that
// resumes from the revision of the last set it applied gets only what
// changed since, when this member still keeps those changes. A worker
// that did not ask for deltas gets the whole set again on every change.
// Every message is built from the member's cache, and only a change to
// one of the node's own instances wakes its session. A node that serves
// its functions locally (Node.local_http) also hears of the functions it
// may start cold there (localfunctions.go): the whole set in the first
// message, then what changed.
func (a *agentAPI) Session(req *v1.SessionRequest, stream v1.Agent_SessionServer) error {
	ctx := stream.Context()
	node := req.GetNode()
	if err := a.s.cache.Sync(ctx); err != nil {
		return err
	}
	rec, ok := a.s.cache.Node(node)
	if !ok {
		return errdefs.NotFoundf("node %q not found", node)
	}
	var since int64
	if req.GetDeltas() {
		since = req.GetResumeRevision()
	}
	w, full, rev, resumed := a.s.cache.WatchNode(node, since)
	defer w.Close()
	sess := &nodeSession{a: a, node: node, deltas: req.GetDeltas(), sent: map[string]int64{}}
	if rec.Value.GetLocalHttp() {
		// Followed before the set is read, so that no change falls between.
		w.FollowWorkloads()
		sess.local = &localSet{sent: map[string]int64{}}
	}
	var first *v1.Assignments
	if resumed {
		ids, rev := w.Take()
		first = sess.delta(ids, rev, true)
	} else {
		first = sess.fullFrom(full, rev)
	}
	if sess.local != nil {
		a.s.cache.Read(func(r cache.Reader) { sess.localFull(r, first) })
	}
	if err := sess.send(ctx, stream, first); err != nil {
		return err
	}
	every := a.s.cfg.SessionRefresh
	if every <= 0 {
		every = defaultSessionRefresh
	}
	refresh := time.NewTimer(every)
	defer refresh.Stop()
	for {
		quiet := false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.s.stopping:
			return errdefs.Unavailablef("control plane is shutting down")
		case <-w.Changed():
		case <-refresh.C:
			quiet = true
		}
		if quiet {
			refresh.Reset(every)
			if !sess.deltas {
				continue
			}
			// Every change of this node's up to the revision read first is
			// marked before the cache reached it, so the Take after it
			// holds them: nothing at or below rev is left unsent.
			rev := a.s.cache.Rev()
			ids, _ := w.Take()
			msg := sess.delta(ids, rev, true)
			sess.takeLocal(w, msg)
			if err := sess.send(ctx, stream, msg); err != nil {
				return err
			}
			continue
		}
		if err := settle(ctx); err != nil {
			return err
		}
		ids, rev := w.Take()
		msg := sess.delta(ids, rev, false)
		if msg == nil {
			msg = &v1.Assignments{Revision: rev}
			if !sess.takeLocal(w, msg) {
				continue // only statuses or liveness changed: nothing the node must hear
			}
		} else {
			sess.takeLocal(w, msg)
		}
		if !sess.deltas {
			msg = sess.fullNow()
		}
		if err := sess.send(ctx, stream, msg); err != nil {
			return err
		}
		refresh.Reset(every) // sent: the node's resume point moved
	}
}

// nodeSession is what one session has told its node.
type nodeSession struct {
	a      *agentAPI
	node   string
	deltas bool
	// sent is the mod revision of each instance in the node's set as last
	// sent; complete is whether it is the whole set (a resumed session
	// knows only what it sent since).
	sent     map[string]int64
	complete bool
	// local is what it has told the node of its local functions; nil for
	// a node without a local listener.
	local *localSet
}

// takeLocal adds to msg what changed in the node's local functions since
// the last take; it reports whether there was anything.
func (n *nodeSession) takeLocal(w *cache.NodeWatch, msg *v1.Assignments) bool {
	if n.local == nil {
		return false
	}
	names, nodeChanged := w.TakeWorkloads()
	if len(names) == 0 && !nodeChanged {
		return false
	}
	added := false
	// msg keeps the revision of its instances: functions are sent whole
	// when a session starts, so their changes never move its resume point.
	n.a.s.cache.Read(func(r cache.Reader) { added = n.localDelta(r, names, nodeChanged, msg) })
	return added
}

// wanted says whether the node must run inst: bound to it and not lost
// (a lost instance has been replaced; its node, back, must stop it).
func (n *nodeSession) wanted(e cache.Instance) bool {
	return e.Value.GetNode() == n.node && e.Value.GetLostUnixNano() == 0
}

// fullFrom is the whole set out of the node's instances as the cache held
// them at rev.
func (n *nodeSession) fullFrom(insts []cache.Instance, rev int64) *v1.Assignments {
	set := &v1.Assignments{Full: true, Revision: rev}
	clear(n.sent)
	for _, e := range insts { // by ID
		if n.wanted(e) {
			set.Instances = append(set.Instances, e.Value)
			n.sent[e.Value.GetId()] = e.ModRevision
		}
	}
	n.complete = true
	return set
}

// fullNow is the whole set as the cache holds it now.
func (n *nodeSession) fullNow() *v1.Assignments {
	var msg *v1.Assignments
	n.a.s.cache.Read(func(r cache.Reader) {
		msg = n.fullFrom(r.InstancesOn(n.node), r.Rev())
		if n.local != nil {
			n.localFull(r, msg)
		}
	})
	return msg
}

// delta is what the node must hear about the instances ids, which changed
// up to rev: those it runs now in a different version than last sent, and
// those that left its set; nil when that is nothing (unless always).
func (n *nodeSession) delta(ids []string, rev int64, always bool) *v1.Assignments {
	sort.Strings(ids)
	set := &v1.Assignments{Revision: rev}
	n.a.s.cache.Read(func(r cache.Reader) {
		for _, id := range ids {
			e, ok := r.Instance(id)
			_, had := n.sent[id]
			switch {
			case ok && n.wanted(e):
				if had && n.sent[id] == e.ModRevision {
					continue // its status changed, not the instance
				}
				set.Instances = append(set.Instances, e.Value)
				n.sent[id] = e.ModRevision
			case had || !n.complete:
				set.Removed = append(set.Removed, id)
				delete(n.sent, id)
			}
		}
	})
	if !always && len(set.Instances)+len(set.Removed) == 0 {
		return nil
	}
	return set
}

// send resolves the configs and secrets of msg's instances and sends it.
func (n *nodeSession) send(ctx context.Context, stream v1.Agent_SessionServer, msg *v1.Assignments) error {
	if err := n.a.s.resolveEnv(ctx, msg.Instances); err != nil {
		n.a.s.log.Warn("cannot resolve the configs and secrets of a node's instances", "node", n.node, "err", err)
		return err
	}
	if err := n.a.s.resolveLocal(ctx, msg.LocalFunctions); err != nil {
		n.a.s.log.Warn("cannot resolve the configs and secrets of a node's local functions", "node", n.node, "err", err)
		return err
	}
	return stream.Send(msg)
}

// settle lets a burst of changes (a deploy binding many instances at
// once) arrive before a message goes out, so that it carries them all.
func settle(ctx context.Context) error {
	t := time.NewTimer(5 * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ReportStatus stores a batch of observed states, with the reports of other
// nodes arriving meanwhile (store.Batcher).
func (a *agentAPI) ReportStatus(ctx context.Context, batch *v1.StatusBatch) (*v1.StatusAck, error) {
	if err := a.checkOwnership(ctx, batch); err != nil {
		return nil, err
	}
	prev := a.s.prevStatuses(batch.GetStatuses()) // observe: exit events
	ops := make([]clientv3.Op, 0, len(batch.GetStatuses()))
	now := time.Now().UnixNano()
	for _, st := range batch.GetStatuses() {
		if st.GetId() == "" {
			continue
		}
		st.Node = batch.GetNode()
		if st.UpdatedUnixNano == 0 {
			st.UpdatedUnixNano = now
		}
		op, err := a.s.store.Statuses.PutOp(st.GetId(), st)
		if err != nil {
			return nil, err
		}
		// Only instances that still exist get a status: a report racing a
		// deletion (or a fenced node's final word) must not resurrect one.
		// An instance is bound to one node for its whole life, so existence
		// is enough to keep one node from writing over another's report.
		exists := clientv3.Compare(clientv3.CreateRevision(a.s.store.Instances.Key(st.GetId())), ">", 0)
		ops = append(ops, clientv3.OpTxn([]clientv3.Cmp{exists}, []clientv3.Op{op}, nil))
	}
	if err := a.s.statuses.Write(ctx, ops); err != nil {
		return nil, err
	}
	a.s.recordExits(prev, batch.GetStatuses())
	return &v1.StatusAck{}, nil
}

// FetchBlob streams a stored blob to a worker: to a node, only a blob an
// instance bound to it runs (found through the cache's index of the
// node's instances).
func (a *agentAPI) FetchBlob(req *v1.FetchBlobRequest, stream v1.Agent_FetchBlobServer) error {
	caller, err := callerOf(stream.Context())
	if err != nil {
		return err
	}
	if caller.Role == auth.RoleNode && !a.nodeMayFetch(caller.Name, req) {
		// Bound a moment ago through another member: once more when this
		// member's cache has caught up with etcd.
		if err := a.s.cache.Sync(stream.Context()); err != nil {
			return err
		}
		if !a.nodeMayFetch(caller.Name, req) {
			return errdefs.Deniedf("node %s may fetch only the blobs of its own instances and local functions; none runs %s", caller.Name, req.GetDigest())
		}
	}
	first := true
	return a.s.blobs.WriteTo(stream.Context(), req.GetDigest(), func(chunk []byte, size int64) error {
		msg := &v1.BlobChunk{Data: chunk}
		if first {
			msg.Size, first = size, false
		}
		return stream.Send(msg)
	})
}

// nodeMayFetch says whether node may fetch the blob req names: one of
// its instances runs it, or (edge) the local function req names does.
func (a *agentAPI) nodeMayFetch(node string, req *v1.FetchBlobRequest) bool {
	return a.nodeRuns(node, req.GetDigest()) ||
		req.GetLocalFunction() != "" && a.localFunctionBlob(node, req.GetLocalFunction(), req.GetDigest())
}

// nodeRuns says whether an instance bound to node (and not lost) runs the
// blob digest.
func (a *agentAPI) nodeRuns(node, digest string) bool {
	found := false
	a.s.cache.Read(func(r cache.Reader) {
		for _, e := range r.InstancesOn(node) {
			if e.Value.GetLostUnixNano() == 0 && slices.Contains(workloads.Blobs(e.Value.GetSpec()), digest) {
				found = true
				return
			}
		}
	})
	return found
}
