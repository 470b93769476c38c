package controlplane

import (
	"context"
	"errors"
	"math"
	"sort"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// agentAPI serves the Agent service the workers speak.
type agentAPI struct {
	v1.UnimplementedAgentServer
	s *Server

	mu     sync.Mutex
	leases map[string]clientv3.LeaseID // node name → its liveness lease
}

// Register records a node and starts its liveness lease.
func (a *agentAPI) Register(ctx context.Context, req *v1.RegisterRequest) (*v1.RegisterResponse, error) {
	n := req.GetNode()
	if err := ValidateNodeName(n.GetName()); err != nil {
		return nil, err
	}
	for k, v := range n.GetLabels() {
		if err := ValidateLabel(k, v); err != nil {
			return nil, errdefs.Invalidf("node %s: %v", n.GetName(), err)
		}
	}
	n.RegisteredUnixNano = time.Now().UnixNano()
	// Compare-and-swap, so that a cordon or drain racing the registration
	// is kept rather than overwritten.
	for attempt := 0; ; attempt++ {
		guard := clientv3.Compare(clientv3.CreateRevision(a.s.store.Nodes.Key(n.GetName())), "=", 0)
		if cur, err := a.s.store.Nodes.Get(ctx, n.GetName()); err == nil {
			n.Cordoned = cur.Value.GetCordoned() // an operator's choice survives re-registration
			n.Draining = cur.Value.GetDraining()
			guard = a.s.store.Nodes.Unchanged(n.GetName(), cur.ModRevision)
		} else if !errdefs.IsNotFound(err) {
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
	if err := a.renew(ctx, n.GetName(), true); err != nil {
		return nil, err
	}
	a.s.log.Info("node registered", "node", n.GetName(), "address", n.GetAddress(), "runtimes", n.GetRuntimes())
	return &v1.RegisterResponse{
		HeartbeatIntervalMs: a.s.cfg.HeartbeatInterval.Milliseconds(),
		NodeGraceMs:         a.s.cfg.NodeGrace.Milliseconds(),
	}, nil
}

// Heartbeat keeps the node's lease alive.
func (a *agentAPI) Heartbeat(ctx context.Context, req *v1.HeartbeatRequest) (*v1.HeartbeatResponse, error) {
	if _, err := a.s.store.Nodes.Get(ctx, req.GetNode()); err != nil {
		return nil, err // unknown node: the worker registers again
	}
	return &v1.HeartbeatResponse{}, a.renew(ctx, req.GetNode(), false)
}

// renew refreshes the node's lease, or grants a new one (fresh is true, the
// lease expired, or another member granted it) and binds the alive key.
func (a *agentAPI) renew(ctx context.Context, node string, fresh bool) error {
	a.mu.Lock()
	id, ok := a.leases[node]
	a.mu.Unlock()
	if ok && !fresh {
		_, err := a.s.store.Client.KeepAliveOnce(ctx, id)
		if err == nil {
			return nil
		}
		if !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return errdefs.Unavailablef("renew lease of node %s: %v", node, err)
		}
	}
	ttl := int64(math.Ceil(a.s.cfg.NodeGrace.Seconds()))
	lease, err := a.s.store.Client.Grant(ctx, ttl)
	if err != nil {
		return errdefs.Unavailablef("grant lease for node %s: %v", node, err)
	}
	if _, err := a.s.store.Client.Put(ctx, store.AlivePrefix+node, "", clientv3.WithLease(lease.ID)); err != nil {
		return errdefs.Unavailablef("mark node %s alive: %v", node, err)
	}
	a.mu.Lock()
	old, hadOld := a.leases[node]
	a.leases[node] = lease.ID
	a.mu.Unlock()
	if hadOld && old != lease.ID {
		_, _ = a.s.store.Client.Revoke(ctx, old)
	}
	return nil
}

// Session streams the node's full desired set whenever it changes.
func (a *agentAPI) Session(req *v1.SessionRequest, stream v1.Agent_SessionServer) error {
	ctx := stream.Context()
	node := req.GetNode()
	if _, err := a.s.store.Nodes.Get(ctx, node); err != nil {
		return err
	}
	for {
		insts, rev, err := a.s.store.Instances.List(ctx)
		if err != nil {
			return err
		}
		set := &v1.Assignments{Revision: rev}
		mine := map[string]bool{}
		for _, inst := range insts {
			// A lost instance has been replaced: its node, back, must stop it.
			if inst.Value.GetNode() == node && inst.Value.GetLostUnixNano() == 0 {
				set.Instances = append(set.Instances, inst.Value)
				mine[inst.Name] = true
			}
		}
		sort.Slice(set.Instances, func(i, j int) bool { return set.Instances[i].GetId() < set.Instances[j].GetId() })
		if err := a.s.resolveEnv(ctx, set.Instances); err != nil { // configs
			a.s.log.Warn("cannot resolve the configs and secrets of a node's instances", "node", node, "err", err)
			return err
		}
		if err := stream.Send(set); err != nil {
			return err
		}
		if err := a.waitForChange(ctx, node, rev, mine); err != nil {
			return err
		}
	}
}

// waitForChange blocks until an instance bound to node, or one in the set
// it was last sent, changes after rev; then lets a burst settle.
func (a *agentAPI) waitForChange(ctx context.Context, node string, rev int64, mine map[string]bool) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := a.s.store.Client.Watch(wctx, store.InstancesPrefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-a.s.stopping:
			return errdefs.Unavailablef("control plane is shutting down")
		case resp, ok := <-wch:
			if !ok {
				return errdefs.Unavailablef("watch on instances ended")
			}
			if err := resp.Err(); err != nil {
				return errdefs.Unavailablef("watch on instances: %v", err)
			}
			for _, ev := range resp.Events {
				id := a.s.store.Instances.NameOf(ev.Kv.Key)
				if mine[id] {
					return settle(ctx)
				}
				if ev.Type == clientv3.EventTypePut {
					inst, err := a.s.store.Instances.Decode(ev.Kv.Value)
					if err == nil && inst.GetNode() == node {
						return settle(ctx)
					}
				}
			}
		}
	}
}

func settle(ctx context.Context) error {
	select {
	case <-time.After(5 * time.Millisecond):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ReportStatus stores a batch of observed states in as few transactions as
// the request limit allows.
func (a *agentAPI) ReportStatus(ctx context.Context, batch *v1.StatusBatch) (*v1.StatusAck, error) {
	if err := a.checkOwnership(ctx, batch); err != nil {
		return nil, err
	}
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
	if _, err := store.Txn(ctx, a.s.store.Client, nil, ops); err != nil {
		return nil, err
	}
	return &v1.StatusAck{}, nil
}

// FetchBlob streams a stored blob to a worker.
func (a *agentAPI) FetchBlob(req *v1.FetchBlobRequest, stream v1.Agent_FetchBlobServer) error {
	first := true
	return a.s.blobs.WriteTo(stream.Context(), req.GetDigest(), func(chunk []byte, size int64) error {
		msg := &v1.BlobChunk{Data: chunk}
		if first {
			msg.Size, first = size, false
		}
		return stream.Send(msg)
	})
}

// aliveNodes returns the names of nodes whose lease is live.
func (s *Server) aliveNodes(ctx context.Context) (map[string]bool, error) {
	resp, err := s.store.Client.Get(ctx, store.AlivePrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, errdefs.Unavailablef("read node liveness: %v", err)
	}
	alive := make(map[string]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		alive[string(kv.Key[len(store.AlivePrefix):])] = true
	}
	return alive, nil
}

// ValidateNodeName checks a node name: a DNS name of labels.
func ValidateNodeName(name string) error {
	if name == "" || len(name) > 253 || !nodeName.MatchString(name) {
		return errdefs.Invalidf("node name %q is not valid: use letters, digits, '-', '_' and '.'", name)
	}
	return nil
}
