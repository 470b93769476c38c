package api

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/certrecords"
	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// CordonNode stops new instances from being placed on a node; those it
// runs stay.
func (a *controlAPI) CordonNode(ctx context.Context, req *v1.NodeRequest) (*v1.NodeView, error) {
	return a.s.updateNode(ctx, req.GetName(), "NodeCordoned", "node %s cordoned: no new instances are placed on it", func(n *v1.Node) {
		n.Cordoned = true
	})
}

// UncordonNode makes a node schedulable again, ending a drain.
func (a *controlAPI) UncordonNode(ctx context.Context, req *v1.NodeRequest) (*v1.NodeView, error) {
	return a.s.updateNode(ctx, req.GetName(), "NodeUncordoned", "node %s uncordoned: instances may be placed on it", func(n *v1.Node) {
		n.Cordoned, n.Draining = false, false
	})
}

// DrainNode cordons a node and has the controller move its instances
// away, each workload kept at its replica count where the cluster has room.
// It returns at once; the node's instance count falls to zero as it drains.
func (a *controlAPI) DrainNode(ctx context.Context, req *v1.NodeRequest) (*v1.NodeView, error) {
	return a.s.updateNode(ctx, req.GetName(), "NodeDraining", "node %s draining: its instances move to other nodes", func(n *v1.Node) {
		n.Cordoned, n.Draining = true, true
	})
}

// RemoveNode forgets a node. A Ready node is refused unless force is set:
// its agent would register it again at its next heartbeat. The instances it
// held are replaced elsewhere by the controller.
func (a *controlAPI) RemoveNode(ctx context.Context, req *v1.RemoveNodeRequest) (*v1.RemoveNodeResponse, error) {
	return a.s.removeNode(ctx, a.s.store.Client, req)
}

// removeNode is RemoveNode writing through kv: the leader's cloud
// controller passes its fenced KV, so that a deposed leader removes
// nothing (cloud.go).
func (s *Server) removeNode(ctx context.Context, kv clientv3.KV, req *v1.RemoveNodeRequest) (*v1.RemoveNodeResponse, error) {
	a := &controlAPI{s: s}
	name := req.GetName()
	if err := workloads.ValidateNodeName(name); err != nil {
		return nil, err
	}
	if err := a.s.cache.Sync(ctx); err != nil {
		return nil, err
	}
	// What it holds as it is removed (the transaction fails if the node
	// changed since): the controller starts replacing them as soon as
	// the node is gone.
	cur, ok := a.s.cache.Node(name)
	if !ok {
		return nil, errdefs.NotFoundf("node %q not found", name)
	}
	if cur.Alive && !req.GetForce() {
		return nil, errdefs.Preconditionf("node %s is Ready: stop its agent first (or drain it with 'wasmorch drain %s'), or pass --force", name, name)
	}
	// Its certificates are revoked with it (controlplane/certrecords): its agent, still
	// running or not, is refused from then on and must join again.
	revoke, certsUnchanged, revoked, err := certrecords.RevokeOps(ctx, a.s.store.Client, certrecords.Prefix(auth.RoleNode, name), "node "+name+" was removed from the cluster ('wasmorch node rm'): it must join again with a join token")
	if err != nil {
		return nil, err
	}
	resp, err := kv.Txn(ctx).
		If(a.s.store.Nodes.Unchanged(name, cur.ModRevision), certsUnchanged).
		Then(append(revoke, clientv3.OpDelete(a.s.store.Nodes.Key(name)), clientv3.OpDelete(store.AlivePrefix+name))...).
		Commit()
	if err != nil {
		return nil, errdefs.Unavailablef("remove node %s: %v", name, err)
	}
	if !resp.Succeeded {
		return nil, errdefs.Conflictf("node %s changed while it was being removed; try again", name)
	}
	if cur.Alive && cur.Lease != 0 {
		_, _ = a.s.store.Client.Revoke(ctx, clientv3.LeaseID(cur.Lease)) // its lease has nothing else to keep
	}
	held := cur.Used.Instances
	if err := a.s.events.Record(ctx, events.Node(name), "NodeRemoved", "node %s removed (%d instances to replace)", name, held); err != nil {
		a.s.log.Warn("could not record event", "err", err)
	}
	a.s.log.Info("node removed", "node", name, "instances", held, "forced", req.GetForce(), "revoked certificates", len(revoked))
	return &v1.RemoveNodeResponse{LostInstances: held}, nil
}

// updateNode changes a node record with compare-and-swap, retrying on
// conflicts with concurrent registrations, and records an event.
func (s *Server) updateNode(ctx context.Context, name, reason, format string, change func(*v1.Node)) (*v1.NodeView, error) {
	return s.updateNodeVia(ctx, s.store.Client, name, reason, format, change)
}

// updateNodeVia is updateNode writing through kv (the leader's fenced KV
// for the cloud controller's writes: cloud.go).
func (s *Server) updateNodeVia(ctx context.Context, kv clientv3.KV, name, reason, format string, change func(*v1.Node)) (*v1.NodeView, error) {
	if err := workloads.ValidateNodeName(name); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		cur, err := s.store.Nodes.Get(ctx, name)
		if err != nil {
			return nil, err
		}
		n := proto.Clone(cur.Value).(*v1.Node)
		change(n)
		if proto.Equal(n, cur.Value) {
			break
		}
		op, err := s.store.Nodes.PutOp(name, n)
		if err != nil {
			return nil, err
		}
		resp, err := kv.Txn(ctx).If(s.store.Nodes.Unchanged(name, cur.ModRevision)).Then(op).Commit()
		if err != nil {
			return nil, errdefs.Unavailablef("update node %s: %v", name, err)
		}
		if !resp.Succeeded && attempt < 5 {
			continue
		} else if !resp.Succeeded {
			return nil, errdefs.Conflictf("node %q changed since it was read", name)
		}
		if err := s.events.Record(ctx, events.Node(name), reason, format, name); err != nil {
			s.log.Warn("could not record event", "err", err)
		}
		break
	}
	if err := s.cache.Sync(ctx); err != nil {
		return nil, err
	}
	n, ok := s.cache.Node(name)
	if !ok {
		return nil, errdefs.NotFoundf("node %q not found", name)
	}
	return nodeView(n), nil
}

// nodeView is a node with its readiness and what its instances (bound to
// it, not lost) hold, as the cache keeps them.
func nodeView(n cache.Node) *v1.NodeView {
	return &v1.NodeView{
		Node: n.Value, Ready: n.Alive, Instances: n.Used.Instances,
		Allocated: &v1.Resources{Instances: n.Used.Instances, MemoryBytes: n.Used.MemoryBytes, CpuMillis: n.Used.CPUMillis},
	}
}
