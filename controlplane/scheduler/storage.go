package scheduler

import (
	"fmt"

	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/volumes"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// State (issue 14): a named volume lives on one node. An instance that
// mounts volumes that exist is placed only on their node; one whose
// volumes do not exist yet is placed as any other, and its volumes are to
// be created on the node it is bound to (Plan.NewVolumes), which the rest
// of the pass then holds to as well. An instance with per-instance
// volumes is a group of its own (its replica slot's volumes are its own),
// so each replica is pinned to the node of its slot's volumes.

// volumeGroup is what a group whose workload mounts volumes knows on top
// of the others.
type volumeGroup struct {
	names  []string
	why    []string // by node index: why the node is ruled out statically, "" if not
	pinned string   // the node the group's volumes live on, once known
	volume string   // the volume that pinned it
}

func newVolumeGroup(inst *v1.Instance, nodes int) *volumeGroup {
	vg := &volumeGroup{why: make([]string, nodes)}
	for _, v := range inst.GetSpec().GetVolumes() {
		vg.names = append(vg.names, volumes.RecordName(v, inst))
	}
	return vg
}

// pinVolumes narrows g's feasible nodes to the node its volumes live on,
// once one of them is known to live somewhere.
func (p *pass) pinVolumes(g *group) {
	vg := g.volumes
	node, volume := "", ""
	for _, v := range vg.names {
		at := p.volumes[v]
		switch {
		case at == "":
		case node == "":
			node, volume = at, v
		case at != node:
			g.unplaceable = fmt.Sprintf("volumes %s and %s live on different nodes (%s and %s)", volume, v, node, at)
			return
		}
	}
	if node == "" || node == vg.pinned {
		return
	}
	vg.pinned, vg.volume = node, volume
	var keep []*nodeState
	for _, ns := range g.feasible {
		if ns.info.Node.GetName() == node {
			keep = append(keep, ns)
		}
	}
	g.feasible, g.ranked = keep, nil
	if len(keep) == 0 {
		g.unplaceable = vg.reason(p, g)
	}
}

// reason says why the node g's volumes live on cannot take an instance.
func (vg *volumeGroup) reason(p *pass, g *group) string {
	why := "it is not registered"
	if ns := p.byName[vg.pinned]; ns != nil {
		if why = vg.why[ns.idx]; why == "" {
			why = g.fits(ns)
		}
	}
	return fmt.Sprintf("volume %s lives on node %s: %s", vg.volume, vg.pinned, why)
}

// placeVolumes records that g's volumes not placed yet live on ns from now
// on, and are to be created there.
func (p *pass) placeVolumes(g *group, ns *nodeState, created map[string]string) {
	node := ns.info.Node.GetName()
	for _, v := range g.volumes.names {
		if p.volumes[v] == "" {
			p.volumes[v] = node
			created[v] = node
		}
	}
}

// mountsAllowed reports whether node n allows every host directory spec
// mounts (agent|up --allow-mount).
func mountsAllowed(spec *v1.WorkloadSpec, n *v1.Node) bool {
	for _, m := range spec.GetMounts() {
		if !workloads.MountAllowed(m.GetHostPath(), n.GetAllowedMounts()) {
			return false
		}
	}
	return true
}
