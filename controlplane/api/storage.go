package api

import (
	"context"
	"maps"
	"path"
	"slices"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/manifest"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// checkStorageIn refuses a spec whose scratch space (state, issue 14) is
// over what every registered node allows one instance (its worker's
// --max-scratch), or that mounts a host directory no registered node
// allows (--allow-mount), so that it is not stored only to stay pending.
// With no node registered yet there is nothing to compare with: the
// scheduler says why it waits. It looks at the nodes only for a spec that
// asks for scratch space or host mounts.
func checkStorageIn(r cache.Reader, spec *v1.WorkloadSpec) error {
	want := spec.GetScratchBytes()
	if want <= 0 && len(spec.GetMounts()) == 0 {
		return nil
	}
	nodes := r.Nodes()
	if len(nodes) == 0 {
		return nil
	}
	if err := checkMountsOn(nodes, spec); err != nil || want <= 0 {
		return err
	}
	var most int64
	for _, n := range nodes {
		most = max(most, n.Value.GetMaxScratchBytes())
	}
	if want <= most {
		return nil
	}
	if most == 0 {
		return errdefs.Invalidf("scratch space of %s is more than any node allows: no node offers scratch space (agent|up --max-scratch)", manifest.FormatBytes(want))
	}
	return errdefs.Invalidf("scratch space of %s is more than any node allows one instance (at most %s: agent|up --max-scratch)", manifest.FormatBytes(want), manifest.FormatBytes(most))
}

// volumeUsers are the workloads whose spec mounts each volume (all
// volumes when names is nil).
func volumeUsers(r cache.Reader, names map[string]bool) map[string][]string {
	users := map[string][]string{}
	for _, w := range r.Workloads() {
		for _, vm := range w.Value.GetSpec().GetVolumes() {
			if names == nil || names[vm.GetName()] {
				users[vm.GetName()] = append(users[vm.GetName()], w.Value.GetName())
			}
		}
	}
	return users
}

// ListVolumes lists the named volumes, by name, with the workloads that
// mount them.
func (a *controlAPI) ListVolumes(ctx context.Context, _ *v1.ListVolumesRequest) (*v1.ListVolumesResponse, error) {
	if err := a.s.cache.Sync(ctx); err != nil {
		return nil, err
	}
	list, _, err := a.s.store.Volumes.List(ctx)
	if err != nil {
		return nil, err
	}
	var users map[string][]string
	a.s.cache.Read(func(r cache.Reader) { users = volumeUsers(r, nil) })
	resp := &v1.ListVolumesResponse{}
	for _, v := range list {
		resp.Volumes = append(resp.Volumes, &v1.VolumeView{Volume: v.Value, Workloads: users[v.Name]})
	}
	return resp, nil
}

// GetVolume is one volume with the workloads that mount it.
func (a *controlAPI) GetVolume(ctx context.Context, req *v1.GetVolumeRequest) (*v1.VolumeView, error) {
	if err := workloads.ValidateVolumeName(req.GetName()); err != nil {
		return nil, err
	}
	if err := a.s.cache.Sync(ctx); err != nil {
		return nil, err
	}
	cur, err := a.s.store.Volumes.Get(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	var users map[string][]string
	a.s.cache.Read(func(r cache.Reader) { users = volumeUsers(r, map[string]bool{req.GetName(): true}) })
	return &v1.VolumeView{Volume: cur.Value, Workloads: users[req.GetName()]}, nil
}

// DeleteVolume removes a volume's record, refused while a workload mounts
// it, and records the removal for its node, whose worker deletes the
// directory (RemovedVolumes); a volume created again under the name has
// another uid.
func (a *controlAPI) DeleteVolume(ctx context.Context, req *v1.DeleteVolumeRequest) (*v1.DeleteVolumeResponse, error) {
	name := req.GetName()
	if err := workloads.ValidateVolumeName(name); err != nil {
		return nil, err
	}
	if err := a.s.cache.Sync(ctx); err != nil {
		return nil, err
	}
	var users []string
	a.s.cache.Read(func(r cache.Reader) { users = volumeUsers(r, map[string]bool{name: true})[name] })
	if len(users) > 0 {
		return nil, errdefs.Preconditionf("volume %q is mounted by workload %s; delete them or deploy them without --volume %s first", name, strings.Join(users, ", "), name)
	}
	cur, err := a.s.store.Volumes.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	// Its node deletes the directory once it learns of the removal
	// (RemovedVolumes), recorded in the same transaction.
	tomb, err := a.s.store.RemovedVolumes.PutOp(cur.Value.GetNode()+"/"+cur.Value.GetUid(), cur.Value)
	if err != nil {
		return nil, err
	}
	resp, err := a.s.store.Client.Txn(ctx).
		If(a.s.store.Volumes.Unchanged(name, cur.ModRevision)).
		Then(a.s.store.Volumes.DeleteOp(name), tomb).
		Commit()
	if err != nil {
		return nil, errdefs.Unavailablef("delete volume %s: %v", name, err)
	}
	if !resp.Succeeded {
		return nil, errdefs.Conflictf("volume %q changed meanwhile; try again", name)
	}
	a.s.log.Info("volume deleted", "volume", name, "node", cur.Value.GetNode())
	return &v1.DeleteVolumeResponse{}, nil
}

// RemovedVolumes forgets the removed volumes whose directories the node
// deleted, and returns those it has yet to delete: a range read of the
// node's own removals, never of all volumes.
func (a *agentAPI) RemovedVolumes(ctx context.Context, req *v1.RemovedVolumesRequest) (*v1.RemovedVolumesResponse, error) {
	node := req.GetNode()
	if err := workloads.ValidateNodeName(node); err != nil {
		return nil, err
	}
	if forget := req.GetForgetUids(); len(forget) > 0 {
		ops := make([]clientv3.Op, 0, len(forget))
		for _, uid := range forget {
			if uid == "" || strings.Contains(uid, "/") {
				continue
			}
			ops = append(ops, a.s.store.RemovedVolumes.DeleteOp(node+"/"+uid))
			if len(ops) == store.MaxOpsPerTxn {
				break
			}
		}
		if _, err := a.s.store.Client.Txn(ctx).Then(ops...).Commit(); err != nil {
			return nil, errdefs.Unavailablef("forget removed volumes of node %s: %v", node, err)
		}
	}
	list, err := a.s.store.RemovedVolumes.ListUnder(ctx, node+"/")
	if err != nil {
		return nil, err
	}
	resp := &v1.RemovedVolumesResponse{}
	for _, v := range list {
		resp.Volumes = append(resp.Volumes, v.Value)
	}
	return resp, nil
}

// checkMountsOn refuses a spec with a host mount that no registered node
// allows (agent|up --allow-mount).
func checkMountsOn(nodes []cache.Node, spec *v1.WorkloadSpec) error {
	for _, m := range spec.GetMounts() {
		allowed := map[string]bool{}
		ok := false
		for _, n := range nodes {
			for _, a := range n.Value.GetAllowedMounts() {
				allowed[a] = true
			}
			ok = ok || workloads.MountAllowed(m.GetHostPath(), n.Value.GetAllowedMounts())
		}
		if ok {
			continue
		}
		if len(allowed) == 0 {
			return errdefs.Invalidf("host path %s is not allowed on any node: no node allows host mounts (agent|up --allow-mount DIR)", m.GetHostPath())
		}
		return errdefs.Invalidf("host path %s is not allowed on any node: nodes allow %s and what is below (agent|up --allow-mount)", m.GetHostPath(), strings.Join(slices.Sorted(maps.Keys(allowed)), ", "))
	}
	return nil
}

// cleanMounts keeps the clean absolute paths of a node's allowed host
// directories, which are all the scheduler and the API compare.
func cleanMounts(dirs []string) []string {
	var out []string
	for _, d := range dirs {
		if path.IsAbs(d) && path.Clean(d) == d {
			out = append(out, d)
		}
	}
	return out
}
