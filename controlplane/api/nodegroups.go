package api

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// NodeGroup objects (docs/cloud.md): `wasmorch apply` stores a group under
// nodeGroupSpecsPrefix, the leader's cloud controller hands it to its
// provider over a configured group of the same name, and records its
// status under nodeGroupsPrefix, which get, describe and watch read.

// nodeGroupSpecsPrefix is cloud.SpecsPrefix (the api does not import the
// controller).
const nodeGroupSpecsPrefix = store.CloudPrefix + "specs/"

// nodeGroupHooks is what the member knows of its node providers.
type nodeGroupHooks struct {
	// check says why no provider of this member can make the group (nil:
	// one can).
	check func(provider.NodeGroup) error
	// configured says whether the server's config has a group of that
	// name.
	configured func(name string) bool
}

// SetNodeGroupHooks gives the API what the member knows of its node
// providers, for apply to refuse a group none can make.
func (s *Server) SetNodeGroupHooks(check func(provider.NodeGroup) error, configured func(name string) bool) {
	s.nodeGroups = nodeGroupHooks{check: check, configured: configured}
}

// ApplyNodeGroup stores a NodeGroup object, once it is valid and a
// provider of the member can make its nodes; with dry_run it only says
// what would change.
func (a *controlAPI) ApplyNodeGroup(ctx context.Context, req *v1.NodeGroupApplyRequest) (*v1.NodeGroupApplyResponse, error) {
	if req.GetSpec() == nil {
		return nil, errdefs.Invalidf("a node group needs a spec")
	}
	g := provider.FromSpec(req.GetSpec())
	if g.Provider == "" {
		return nil, errdefs.Invalidf("node group %s: provider is missing (provider: local)", g.Name)
	}
	if err := g.Validate(); err != nil {
		return nil, errdefs.Invalidf("%v", err)
	}
	if h := a.s.nodeGroups; h.check != nil {
		if err := h.check(g); err != nil {
			return nil, errdefs.Invalidf("%v", err)
		}
	}
	st, err := a.s.nodeGroupStatus(ctx, g.Name)
	if err != nil {
		return nil, err
	}
	if st != nil && st.GetSource() == "plugin" {
		return nil, errdefs.Preconditionf("node group %s is listed by the plugin of provider %s: change it there, or give this one another name", g.Name, st.GetProvider())
	}
	key := nodeGroupSpecsPrefix + g.Name
	resp, err := a.s.store.Client.Get(ctx, key)
	if err != nil {
		return nil, errdefs.Unavailablef("read node group %s: %v", g.Name, err)
	}
	want := g.Spec()
	out := &v1.NodeGroupApplyResponse{}
	var modRev int64
	if len(resp.Kvs) == 0 {
		out.Created, out.Changed = true, true
	} else {
		cur := &v1.NodeGroupSpec{}
		if err := proto.Unmarshal(resp.Kvs[0].Value, cur); err != nil {
			return nil, fmt.Errorf("node group %s: stored record unreadable: %w", g.Name, err)
		}
		modRev = resp.Kvs[0].ModRevision
		out.Changes = nodeGroupChanges(cur, want)
		out.Changed = len(out.Changes) > 0
	}
	if req.GetDryRun() || !out.Changed {
		return out, nil
	}
	b, err := proto.Marshal(want)
	if err != nil {
		return nil, err
	}
	txn, err := a.s.store.Client.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).Then(clientv3.OpPut(key, string(b))).Commit()
	if err != nil {
		return nil, errdefs.Unavailablef("store node group %s: %v", g.Name, err)
	}
	if !txn.Succeeded {
		return nil, errdefs.Conflictf("node group %s changed while it was being applied; apply again", g.Name)
	}
	verb := "configured"
	if out.Created {
		verb = "created"
	}
	if err := a.s.events.Record(ctx, "nodegroup/"+g.Name, "NodeGroupApplied", "node group %s %s: provider %s, min %d, max %d, %d instances per node", g.Name, verb, g.Provider, g.Min, g.Max, g.Template.Instances); err != nil {
		a.s.log.Warn("could not record event", "err", err)
	}
	return out, nil
}

// nodeGroupChanges says what changes from cur to want, a line each.
func nodeGroupChanges(cur, want *v1.NodeGroupSpec) []string {
	var out []string
	field := func(name string, a, b any) {
		if fmt.Sprint(a) != fmt.Sprint(b) {
			out = append(out, fmt.Sprintf("~ %s: %v -> %v", name, a, b))
		}
	}
	field("provider", cur.GetProvider(), want.GetProvider())
	field("min", cur.GetMinSize(), want.GetMinSize())
	field("max", cur.GetMaxSize(), want.GetMaxSize())
	field("instances", cur.GetInstancesPerNode(), want.GetInstancesPerNode())
	field("zone", cur.GetZone(), want.GetZone())
	field("arch", cur.GetArch(), want.GetArch())
	field("memory", cur.GetMemoryBytes(), want.GetMemoryBytes())
	field("cpu", cur.GetCpuMillis(), want.GetCpuMillis())
	field("instanceType", cur.GetInstanceType(), want.GetInstanceType())
	if !slices.Equal(cur.GetRuntimes(), want.GetRuntimes()) {
		field("runtimes", cur.GetRuntimes(), want.GetRuntimes())
	}
	if !maps.Equal(cur.GetLabels(), want.GetLabels()) {
		field("labels", cur.GetLabels(), want.GetLabels())
	}
	return out
}

// GetNodeGroup returns a group's status as the leader's controller last
// recorded it, and the NodeGroup applied for it.
func (a *controlAPI) GetNodeGroup(ctx context.Context, req *v1.NodeGroupGetRequest) (*v1.NodeGroupView, error) {
	name := req.GetName()
	st, err := a.s.nodeGroupStatus(ctx, name)
	if err != nil {
		return nil, err
	}
	spec, _, err := a.s.nodeGroupSpec(ctx, name)
	if err != nil {
		return nil, err
	}
	if st == nil && spec == nil {
		return nil, errdefs.NotFoundf("node group %q not found", name)
	}
	return &v1.NodeGroupView{Status: st, Spec: spec}, nil
}

// DeleteNodeGroup deletes a NodeGroup object. A group of the server's
// config of that name takes its place again; one that only the object
// made must have no node left (apply it with min 0 and let its nodes be
// deleted as idle), so that no node is left without a group.
func (a *controlAPI) DeleteNodeGroup(ctx context.Context, req *v1.NodeGroupDeleteRequest) (*v1.NodeGroupDeleteResponse, error) {
	name := req.GetName()
	spec, rev, err := a.s.nodeGroupSpec(ctx, name)
	if err != nil {
		return nil, err
	}
	configured := a.s.nodeGroups.configured != nil && a.s.nodeGroups.configured(name)
	if spec == nil {
		if configured {
			return nil, errdefs.NotFoundf("node group %s was not applied: it is configured on the server (--node-group), change it there", name)
		}
		return nil, errdefs.NotFoundf("node group %q not found", name)
	}
	if !configured {
		st, err := a.s.nodeGroupStatus(ctx, name)
		if err != nil {
			return nil, err
		}
		if n := len(st.GetNodes()); n > 0 || st.GetTargetSize() > 0 {
			return nil, errdefs.Preconditionf("node group %s still has %d nodes: apply it with min 0 and delete it once they are deleted as idle", name, max(n, int(st.GetTargetSize())))
		}
	}
	key := nodeGroupSpecsPrefix + name
	txn, err := a.s.store.Client.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpDelete(key)).Commit()
	if err != nil {
		return nil, errdefs.Unavailablef("delete node group %s: %v", name, err)
	}
	if !txn.Succeeded {
		return nil, errdefs.Conflictf("node group %s changed while it was being deleted; try again", name)
	}
	msg := "node group %s deleted"
	if configured {
		msg += ": the server's configured group of that name applies again"
	}
	if err := a.s.events.Record(ctx, "nodegroup/"+name, "NodeGroupDeleted", msg, name); err != nil {
		a.s.log.Warn("could not record event", "err", err)
	}
	return &v1.NodeGroupDeleteResponse{Configured: configured}, nil
}

// nodeGroupSpec reads the NodeGroup applied for name (nil: none) and its
// revision.
func (s *Server) nodeGroupSpec(ctx context.Context, name string) (*v1.NodeGroupSpec, int64, error) {
	resp, err := s.store.Client.Get(ctx, nodeGroupSpecsPrefix+name)
	if err != nil {
		return nil, 0, errdefs.Unavailablef("read node group %s: %v", name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, nil
	}
	spec := &v1.NodeGroupSpec{}
	if err := proto.Unmarshal(resp.Kvs[0].Value, spec); err != nil {
		return nil, 0, fmt.Errorf("node group %s: stored record unreadable: %w", name, err)
	}
	return spec, resp.Kvs[0].ModRevision, nil
}

// nodeGroupStatus reads a group's recorded status (nil: none).
func (s *Server) nodeGroupStatus(ctx context.Context, name string) (*v1.NodeGroupStatus, error) {
	resp, err := s.store.Client.Get(ctx, nodeGroupsPrefix+name)
	if err != nil {
		return nil, errdefs.Unavailablef("read node group %s: %v", name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, nil
	}
	st := &v1.NodeGroupStatus{}
	if err := proto.Unmarshal(resp.Kvs[0].Value, st); err != nil {
		return nil, fmt.Errorf("node group %s: stored status unreadable: %w", name, err)
	}
	return st, nil
}

// watchNodeGroups follows the groups' statuses after a revision, straight
// from etcd (the controller writes one when it changes): MODIFIED with
// the status, DELETED with its last one.
func (s *Server) watchNodeGroups(ctx context.Context, req *v1.WatchRequest, send func(*v1.WatchEvent) error) error {
	return s.relayEtcd(ctx, req, nodeGroupsPrefix, "node groups", true, func(ev *clientv3.Event) *v1.WatchEvent {
		out := &v1.WatchEvent{Type: v1.WatchEventType_WATCH_EVENT_TYPE_MODIFIED, Revision: ev.Kv.ModRevision}
		value := ev.Kv.Value
		if ev.Type == mvccpb.DELETE {
			out.Type = v1.WatchEventType_WATCH_EVENT_TYPE_DELETED
			if ev.PrevKv == nil {
				return nil
			}
			value = ev.PrevKv.Value
		}
		st := &v1.NodeGroupStatus{}
		if proto.Unmarshal(value, st) != nil {
			return nil
		}
		out.Object = &v1.WatchEvent_NodeGroup{NodeGroup: st}
		return out
	}, send)
}
