package controller

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/scheduler"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/volumes"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// State (issue 14): named volumes. A volume's record says which node it
// lives on; scheduling reads the records of the volumes that the
// instances being placed mount (one read per volume, not the cluster),
// places the instances on their volumes' nodes, creates the records of
// volumes that do not exist yet on the node their first instance is bound
// to, and writes each bound instance with the uids of its volumes, in the
// same transaction as the bindings (which fails if a volume was created or
// removed meanwhile). A per-instance volume is a record of its own per
// replica slot (internal/volumes names it); the instance's volume_uids
// are keyed by the name it mounts, whichever record that is.

// volumePlacement is what scheduling knows of the volumes of the instances
// it places.
type volumePlacement struct {
	existing map[string]store.Versioned[*v1.Volume]
	created  map[string]*v1.Volume
}

// readVolumes reads the records of the volumes instances mount and puts
// where they live in snap.
func (c *controller) readVolumes(ctx context.Context, instances []*v1.Instance, snap *scheduler.Snapshot) (*volumePlacement, error) {
	var vp *volumePlacement
	for _, inst := range instances {
		for _, vm := range inst.GetSpec().GetVolumes() {
			if vp == nil {
				vp = &volumePlacement{existing: map[string]store.Versioned[*v1.Volume]{}, created: map[string]*v1.Volume{}}
				snap.Volumes = map[string]string{}
			}
			name := volumes.RecordName(vm, inst)
			if _, seen := snap.Volumes[name]; seen {
				continue
			}
			snap.Volumes[name] = ""
			rec, err := c.st.Volumes.Get(ctx, name)
			if errdefs.IsNotFound(err) {
				continue
			} else if err != nil {
				return nil, err
			}
			vp.existing[name] = rec
			snap.Volumes[name] = rec.Value.GetNode()
		}
	}
	if vp != nil {
		for name, node := range snap.Volumes {
			if node == "" {
				delete(snap.Volumes, name)
			}
		}
	}
	return vp, nil
}

// bind sets the uids of inst's volumes, bound to a node by plan, and adds
// the guards and writes its volumes need: an existing volume unchanged, a
// new one created.
func (vp *volumePlacement) bind(st *store.Store, inst *v1.Instance, plan scheduler.Plan, cmps []clientv3.Cmp, ops []clientv3.Op) ([]clientv3.Cmp, []clientv3.Op, error) {
	if vp == nil || len(inst.GetSpec().GetVolumes()) == 0 {
		return cmps, ops, nil
	}
	inst.VolumeUids = map[string]string{}
	for _, vm := range inst.GetSpec().GetVolumes() {
		name := volumes.RecordName(vm, inst)
		if rec, ok := vp.existing[name]; ok {
			inst.VolumeUids[vm.GetName()] = rec.Value.GetUid()
			cmps = append(cmps, st.Volumes.Unchanged(name, rec.ModRevision))
			continue
		}
		vol, ok := vp.created[name]
		if !ok {
			vol = &v1.Volume{Name: name, Node: plan.NewVolumes[name], Uid: newUID(), CreatedUnixNano: time.Now().UnixNano(), CreatedFor: inst.GetWorkload()}
			if vm.GetPerInstance() {
				vol.PerInstance, vol.Workload, vol.Mount, vol.Ordinal = true, inst.GetWorkload(), vm.GetName(), inst.GetOrdinal()
			}
			op, err := st.Volumes.PutOp(name, vol)
			if err != nil {
				return nil, nil, err
			}
			vp.created[name] = vol
			cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(st.Volumes.Key(name)), "=", 0))
			ops = append(ops, op)
		}
		inst.VolumeUids[vm.GetName()] = vol.GetUid()
	}
	return cmps, ops, nil
}

func newUID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
