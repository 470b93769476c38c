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
	"github.com/wasmorch/wasmorch/internal/volumes"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// checkStorageIn refuses a spec whose scratch space (state, issue 14) is
// over what every registered node allows one instance (its worker's
// --max-scratch), or that mounts a host directory no registered node
// allows (--allow-mount), so that it is not stored only to stay pending.
// With no node registered yet there is nothing to compare with: the
// scheduler says why it waits. It looks at the nodes only for a spec that
// asks for scratch space or host mounts.
func checkStorageIn(r cache.Reader, name string, spec *v1.WorkloadSpec) error {
	if err := workloads.ValidatePerInstanceNames(name, spec); err != nil {
		return err
	}
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

// volumeUsers are the workloads whose spec mounts each shared volume
// (all volumes when names is nil).
func volumeUsers(r cache.Reader, names map[string]bool) map[string][]string {
	users := map[string][]string{}
	for _, w := range r.Workloads() {
		for _, vm := range w.Value.GetSpec().GetVolumes() {
			if !vm.GetPerInstance() && (names == nil || names[vm.GetName()]) {
				users[vm.GetName()] = append(users[vm.GetName()], w.Value.GetName())
			}
		}
	}
	return users
}

// slotUser says whether the workload a per-instance volume was made for
// still uses it: it mounts the volume's name per instance, and the
// volume's replica slot is below its replica count (to be filled again)
// or held by one of its instances (a scale-down still stopping). A
// volume of a slot a scale-down removed is kept, as Kubernetes keeps a
// StatefulSet's claims, and is no longer in use: `volume rm` may take it.
// It returns the workload's entry as read, to guard a removal on.
func slotUser(r cache.Reader, vol *v1.Volume) (cache.Workload, bool) {
	if !vol.GetPerInstance() {
		return cache.Workload{}, false
	}
	w, ok := r.Workload(vol.GetWorkload())
	if !ok {
		return cache.Workload{}, false
	}
	mounts := false
	for _, vm := range w.Value.GetSpec().GetVolumes() {
		mounts = mounts || vm.GetPerInstance() && vm.GetName() == vol.GetMount()
	}
	if !mounts {
		return cache.Workload{}, false
	}
	if vol.GetOrdinal() < w.Value.GetSpec().GetReplicas() {
		return w, true
	}
	for _, inst := range r.InstancesOf(vol.GetWorkload()) {
		if inst.Value.GetOrdinal() == vol.GetOrdinal() && volumes.PerInstance(inst.Value.GetSpec()) {
			return w, true
		}
	}
	return cache.Workload{}, false
}

// usersOf are the workloads that use vol: those that mount it by its name,
// and the one whose replica slot it is.
func usersOf(r cache.Reader, vol *v1.Volume, shared []string) []string {
	if w, ok := slotUser(r, vol); ok && !slices.Contains(shared, w.Value.GetName()) {
		return append(slices.Clip(shared), w.Value.GetName())
	}
	return shared
}

// ListVolumes lists the named volumes, by name, with the workloads that
// use them.
func (a *controlAPI) ListVolumes(ctx context.Context, _ *v1.ListVolumesRequest) (*v1.ListVolumesResponse, error) {
	if err := a.s.cache.Sync(ctx); err != nil {
		return nil, err
	}
	list, _, err := a.s.store.Volumes.List(ctx)
	if err != nil {
		return nil, err
	}
	resp := &v1.ListVolumesResponse{}
	a.s.cache.Read(func(r cache.Reader) {
		users := volumeUsers(r, nil)
		for _, v := range list {
			resp.Volumes = append(resp.Volumes, &v1.VolumeView{Volume: v.Value, Workloads: usersOf(r, v.Value, users[v.Name])})
		}
	})
	return resp, nil
}

// GetVolume is one volume with the workloads that use it.
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
	view := &v1.VolumeView{Volume: cur.Value}
	a.s.cache.Read(func(r cache.Reader) {
		view.Workloads = usersOf(r, cur.Value, volumeUsers(r, map[string]bool{req.GetName(): true})[req.GetName()])
	})
	return view, nil
}

// DeleteVolume removes a volume's record, refused while a workload uses
// it, and records the removal for its node, whose worker deletes the
// directory (RemovedVolumes); a volume created again under the name has
// another uid. The users are read from the cache, and the removal is
// guarded on them in its transaction (workloadsUnchangedSince): a deploy
// that mounts the volume and is stored between the check and the removal
// fails the removal, which looks again, rather than have its data
// removed under it.
func (a *controlAPI) DeleteVolume(ctx context.Context, req *v1.DeleteVolumeRequest) (*v1.DeleteVolumeResponse, error) {
	name := req.GetName()
	if err := workloads.ValidateVolumeName(name); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		if err := a.s.cache.Sync(ctx); err != nil {
			return nil, err
		}
		cur, err := a.s.store.Volumes.Get(ctx, name)
		if err != nil {
			return nil, err
		}
		var users []string
		var rev int64
		a.s.cache.Read(func(r cache.Reader) {
			rev = r.Rev()
			users = usersOf(r, cur.Value, volumeUsers(r, map[string]bool{name: true})[name])
		})
		if len(users) > 0 {
			return nil, a.volumeInUse(cur.Value, users)
		}
		if a.s.usersChecked != nil {
			a.s.usersChecked("volume", name)
		}
		// Its node deletes the directory once it learns of the removal
		// (RemovedVolumes), recorded in the same transaction.
		tomb, err := a.s.store.RemovedVolumes.PutOp(cur.Value.GetNode()+"/"+cur.Value.GetUid(), cur.Value)
		if err != nil {
			return nil, err
		}
		resp, err := a.s.store.Client.Txn(ctx).
			If(a.s.store.Volumes.Unchanged(name, cur.ModRevision), a.s.workloadsUnchangedSince(rev)).
			Then(a.s.store.Volumes.DeleteOp(name), tomb).
			Commit()
		if err != nil {
			return nil, errdefs.Unavailablef("delete volume %s: %v", name, err)
		}
		if resp.Succeeded {
			a.s.log.Info("volume deleted", "volume", name, "node", cur.Value.GetNode())
			return &v1.DeleteVolumeResponse{}, nil
		}
		if attempt == maxUserChecks-1 {
			return nil, errdefs.Conflictf("volume %q or the workloads changed meanwhile, %d times; try again", name, maxUserChecks)
		}
	}
}

// maxUserChecks bounds how often a removal guarded on the users of what it
// removes looks again after they changed meanwhile.
const maxUserChecks = 5

// volumeInUse is the error of removing a volume users use.
func (a *controlAPI) volumeInUse(v *v1.Volume, users []string) error {
	if v.GetPerInstance() && slices.Contains(users, v.GetWorkload()) {
		if n := a.replicasOf(v.GetWorkload()); n > v.GetOrdinal() {
			return errdefs.Preconditionf("volume %q is the per-instance volume %s of replica %d of workload %s, which has %d replicas; scale it to %d or fewer, or delete it, first",
				v.GetName(), v.GetMount(), v.GetOrdinal(), v.GetWorkload(), n, v.GetOrdinal())
		}
		return errdefs.Preconditionf("volume %q is the per-instance volume %s of replica %d of workload %s, whose instance is still stopping; try again once it has stopped ('wasmorch get instances')",
			v.GetName(), v.GetMount(), v.GetOrdinal(), v.GetWorkload())
	}
	return errdefs.Preconditionf("volume %q is mounted by workload %s; delete them or deploy them without --volume %s first", v.GetName(), strings.Join(users, ", "), v.GetName())
}

// workloadsUnchangedSince holds a transaction to no workload having been
// stored after etcd revision rev: what the users of a config, secret or
// volume were read at (the cache). A workload deleted since only removes
// a user. etcd compares every workload key for it, in the transaction: the
// cost of one list of the workloads' keys, as the cache's check of their
// specs, for a removal, which is rare.
func (s *Server) workloadsUnchangedSince(rev int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(s.store.Workloads.Prefix()), "<", rev+1).WithPrefix()
}

// replicasOf is a workload's replica count as the cache has it.
func (a *controlAPI) replicasOf(name string) int32 {
	var n int32
	a.s.cache.Read(func(r cache.Reader) {
		if w, ok := r.Workload(name); ok {
			n = w.Value.GetSpec().GetReplicas()
		}
	})
	return n
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
