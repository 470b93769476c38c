package cloud

import (
	"slices"

	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
	"github.com/wasmorch/wasmorch/controlplane/scheduler"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// What the controller decides, apart from carrying it out: whether a
// group's node could run an instance, and which groups grow by how many
// for the instances left Pending. Pure functions over the controller's view.

// fits reports whether a node of g could run inst, as the scheduler would
// judge the node once it has joined.
func fits(g provider.NodeGroup, inst *v1.Instance) bool {
	spec := inst.GetSpec()
	t := g.Template
	if !t.HasRuntime(spec.GetKind()) {
		return false
	}
	pl := spec.GetPlacement()
	if arch := pl.GetArch(); len(arch) > 0 && (t.Arch == "" || !slices.Contains(arch, t.Arch)) {
		return false
	}
	if oss := pl.GetOs(); len(oss) > 0 && !slices.Contains(oss, "linux") {
		return false
	}
	labels := g.NodeLabels(g.Zone)
	for k, want := range pl.GetSelector() {
		if got, ok := labels[k]; !ok || got != want {
			if k == provider.LabelZone && g.Zone == "" {
				continue // the provider's zone: unknown before
			}
			return false
		}
	}
	if t.MemoryBytes > 0 && scheduler.MemoryRequest(spec) > t.MemoryBytes {
		return false
	}
	if t.CPUMillis > 0 && spec.GetCpuMillis() > t.CPUMillis {
		return false
	}
	return true
}

// growth is one decision of a scale-up plan: grow group by nodes from its
// target size, for pending instances.
type growth struct {
	group    string
	from, by int
	pending  int
	limited  bool // at max: nothing to grow, pending stay
}

// plan decides the scale-ups for the pending instances that no node could
// take: groups are offered them smallest first; each takes those its
// template fits, counts the room its Ready, uncordoned nodes have left and
// the nodes asked for but not Ready yet, and grows for the rest within its
// max. It returns the decisions and the instances no group takes.
func plan(groups []provider.NodeGroup, nodes map[string][]groupNode, pending []*v1.Instance, targets map[string]int) ([]growth, []*v1.Instance) {
	var out []growth
	left := pending
	for _, g := range groups {
		target, ok := targets[g.Name]
		if !ok || len(left) == 0 {
			continue
		}
		var take, rest []*v1.Instance
		for _, inst := range left {
			if fits(g, inst) {
				take = append(take, inst)
			} else {
				rest = append(rest, inst)
			}
		}
		if len(take) == 0 {
			continue
		}
		slots := int(g.Template.Instances)
		ready, room := 0, 0
		for _, n := range nodes[g.Name] {
			if n.alive {
				ready++
				if !n.cordoned {
					room += max(0, slots-int(n.instances))
				}
			}
		}
		room += max(0, target-ready) * slots
		short := len(take) - room
		if short <= 0 {
			left = rest // the room there is, or is coming, takes them
			continue
		}
		grow := min((short+slots-1)/slots, g.Max-target)
		if grow <= 0 {
			out = append(out, growth{group: g.Name, from: target, pending: short, limited: true})
			left = append(rest, take[room:]...)
			continue
		}
		out = append(out, growth{group: g.Name, from: target, by: grow, pending: short})
		left = append(rest, take[min(len(take), room+grow*slots):]...)
	}
	return out, left
}
