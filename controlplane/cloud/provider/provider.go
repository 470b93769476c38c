// Package provider is the node-provider interface of the cloud controller
// (controlplane/cloud): what a cloud (or this host, for the built-in local
// provider) must answer for the controller to grow, shrink and check its
// node groups. It follows cluster-autoscaler's external gRPC provider
// (cloudprovider/externalgrpc): node groups with a minimum, a maximum, a
// target size and a template; increase a group; delete given nodes; list a
// group's nodes with their provider id and state.
package provider

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/wasmorch/wasmorch/controlplane/workloads"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Labels every provider puts on the nodes it makes, so that the controller
// knows their group (and so their provider), and workloads can spread over
// zones (--spread zone).
const (
	LabelGroup = "node-group"
	LabelZone  = "zone"
)

// Well-known labels of the nodes a provider makes (docs/cloud.md), in the
// wasmorch.io/ namespace, which a group's own labels may not use: its
// zone, its machine type, and its provider id's last element (a label
// value holds no '/' or ':'), which the controller sets once the node has
// joined.
const (
	LabelPrefix        = "wasmorch.io/"
	LabelWellKnownZone = LabelPrefix + "zone"
	LabelInstanceType  = LabelPrefix + "instance-type"
	LabelProviderID    = LabelPrefix + "provider-id"
)

// Template is what a node of a group looks like once it has joined: its
// labels (beside LabelGroup and LabelZone), arch and capacity, as the
// controller matches pending instances against them before the node
// exists.
type Template struct {
	Labels map[string]string
	Arch   string // "amd64", "arm64"; "" the control plane's own
	// Instances is how many instances a node takes (the agent's
	// --max-instances); MemoryBytes and CPUMillis are 0 when unknown.
	Instances   int32
	MemoryBytes int64
	CPUMillis   int64
	// Runtimes its nodes have ("wasm", "container"); empty: wasm.
	Runtimes []string
	// InstanceType is the machine type ("m5.large"; "" unknown): the
	// LabelInstanceType of its nodes.
	InstanceType string
}

// NodeGroup is one group of like nodes a provider grows and shrinks.
type NodeGroup struct {
	Name     string
	Provider string // the provider that makes its nodes
	Min, Max int
	Zone     string // the zone label of its nodes ("" the provider's)
	Template Template
}

// Validate checks a group as configured: the one-line error names it.
func (g NodeGroup) Validate() error {
	if err := workloads.ValidateObjectName("node group", g.Name); err != nil {
		return err
	}
	switch {
	case g.Min < 0:
		return fmt.Errorf("node group %s: min %d is negative", g.Name, g.Min)
	case g.Max < 1:
		return fmt.Errorf("node group %s: max %d must be at least 1", g.Name, g.Max)
	case g.Min > g.Max:
		return fmt.Errorf("node group %s: min %d is more than max %d", g.Name, g.Min, g.Max)
	case g.Template.Instances < 1:
		return fmt.Errorf("node group %s: instances per node %d must be at least 1", g.Name, g.Template.Instances)
	}
	for k, v := range g.Template.Labels {
		if k == LabelGroup || k == LabelZone || strings.HasPrefix(k, LabelPrefix) {
			return fmt.Errorf("node group %s: label %s is set by the provider", g.Name, k)
		}
		if err := workloads.ValidateLabel(k, v); err != nil {
			return fmt.Errorf("node group %s: %w", g.Name, err)
		}
	}
	if g.Zone != "" {
		if err := workloads.ValidateLabel(LabelZone, g.Zone); err != nil {
			return fmt.Errorf("node group %s: %w", g.Name, err)
		}
	}
	if t := g.Template.InstanceType; t != "" {
		if err := workloads.ValidateLabel(LabelInstanceType, t); err != nil {
			return fmt.Errorf("node group %s: instance type: %w", g.Name, err)
		}
	}
	for _, r := range g.Template.Runtimes {
		if r != "wasm" && r != "container" {
			return fmt.Errorf("node group %s: runtime %q is not wasm or container", g.Name, r)
		}
	}
	return nil
}

// NodeLabels are the labels a node of g joins with: the template's, its
// group, its zone and its instance type (the well-known ones beside).
func (g NodeGroup) NodeLabels(zone string) map[string]string {
	out := map[string]string{LabelGroup: g.Name}
	for k, v := range g.Template.Labels {
		out[k] = v
	}
	if zone != "" {
		out[LabelZone], out[LabelWellKnownZone] = zone, zone
	}
	if t := g.Template.InstanceType; t != "" {
		out[LabelInstanceType] = t
	}
	return out
}

// ProviderIDLabel is the value of a node's LabelProviderID: the last
// element of its provider id ("i-0abc" of "aws:///us-east-1a/i-0abc"),
// "" when that is not a label value.
func ProviderIDLabel(id string) string {
	if i := strings.LastIndexAny(id, "/:"); i >= 0 {
		id = id[i+1:]
	}
	if workloads.ValidateLabel(LabelProviderID, id) != nil {
		return ""
	}
	return id
}

// HasRuntime reports whether the group's nodes run kind ("wasm" when
// empty).
func (t Template) HasRuntime(kind string) bool {
	if kind == "" {
		kind = "wasm"
	}
	if len(t.Runtimes) == 0 {
		return kind == "wasm"
	}
	return slices.Contains(t.Runtimes, kind)
}

// State is where a provider's node is in its life.
type State int

const (
	// Creating: asked for, not yet running (its agent may not have
	// joined).
	Creating State = iota + 1
	// Running: the machine (here, the agent process) runs.
	Running
	// Deleting: being shut down by the provider.
	Deleting
)

func (s State) String() string {
	switch s {
	case Creating:
		return "Creating"
	case Running:
		return "Running"
	case Deleting:
		return "Deleting"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Node is one node of a group as its provider knows it.
type Node struct {
	Name       string // the wasmorch node name it joins as
	ProviderID string // the provider's own id ("local:///pool-x3k9q")
	State      State
}

// NewNode is a node the controller asks a provider to make: it joins the
// control plane at Servers as Name with Token, which grants it Labels (its
// group's and zone's, and its template's) and admits one join.
type NewNode struct {
	Name    string
	Labels  map[string]string
	Token   string
	Servers []string
}

// Provider makes and deletes the nodes of its groups. Calls may be slow
// (a cloud's API); the controller bounds each with its context. An error
// means "unknown": the controller never removes a node because a call
// failed.
type Provider interface {
	// Name is the provider's name in group configs ("local").
	Name() string
	// NodeGroups lists the groups it serves.
	NodeGroups(ctx context.Context) ([]NodeGroup, error)
	// TargetSize is the number of nodes the group is asked to have
	// (running and being created).
	TargetSize(ctx context.Context, group string) (int, error)
	// IncreaseSize makes the nodes given (the controller names them and
	// mints their join tokens); the target size must stay within the
	// group's max.
	IncreaseSize(ctx context.Context, group string, nodes []NewNode) error
	// DeleteNodes deletes the named nodes of the group and lowers its
	// target size by as many.
	DeleteNodes(ctx context.Context, group string, nodes []string) error
	// Nodes lists the group's nodes. A node not listed does not exist:
	// the controller removes it from the cluster at once.
	Nodes(ctx context.Context, group string) ([]Node, error)
	// Close releases the provider (the local provider stops its agents).
	Close() error
}

// ParseGroup reads a group from its flag or config-file form:
// "name=pool,provider=local,min=0,max=3,instances=10,zone=z1,labels=k:v;k2:v2,arch=amd64,memory=4Gi".
func ParseGroup(s string, parseBytes func(string) (int64, error)) (NodeGroup, error) {
	g := NodeGroup{Max: 0}
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || k == "" {
			return g, fmt.Errorf("node group %q: %q is not KEY=VALUE", s, part)
		}
		if seen[k] {
			return g, fmt.Errorf("node group %q: %s given twice", s, k)
		}
		seen[k] = true
		var err error
		switch k {
		case "name":
			g.Name = v
		case "provider":
			g.Provider = v
		case "min":
			g.Min, err = atoi(v)
		case "max":
			g.Max, err = atoi(v)
		case "instances":
			var n int
			n, err = atoi(v)
			g.Template.Instances = int32(n)
		case "zone":
			g.Zone = v
		case "arch":
			g.Template.Arch = v
		case "memory":
			g.Template.MemoryBytes, err = parseBytes(v)
		case "cpu":
			var n int
			n, err = atoi(strings.TrimSuffix(v, "m"))
			g.Template.CPUMillis = int64(n)
		case "runtimes":
			g.Template.Runtimes = strings.Split(v, ";")
		case "instance-type":
			g.Template.InstanceType = v
		case "labels":
			g.Template.Labels = map[string]string{}
			for _, kv := range strings.Split(v, ";") {
				lk, lv, ok := strings.Cut(kv, ":")
				if !ok {
					return g, fmt.Errorf("node group %q: label %q is not KEY:VALUE", s, kv)
				}
				g.Template.Labels[lk] = lv
			}
		default:
			return g, fmt.Errorf("node group %q: unknown key %q (name, provider, min, max, instances, zone, arch, memory, cpu, runtimes, instance-type, labels)", s, k)
		}
		if err != nil {
			return g, fmt.Errorf("node group %q: %s: %w", s, k, err)
		}
	}
	if g.Name == "" {
		return g, fmt.Errorf("node group %q: name is missing", s)
	}
	if g.Provider == "" {
		return g, fmt.Errorf("node group %s: provider is missing (provider=local)", g.Name)
	}
	return g, g.Validate()
}

func atoi(s string) (int, error) {
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err != nil || fmt.Sprint(n) != s {
		return 0, fmt.Errorf("%q is not a whole number", s)
	}
	return n, nil
}

// Configurable is a provider whose groups the cluster configures (the
// built-in local provider): the controller hands it the groups of the
// server's config merged with the NodeGroup objects applied to the
// cluster, which override a configured group of their name.
type Configurable interface {
	Provider
	// SetNodeGroups replaces its groups (each valid and of this provider).
	SetNodeGroups(gs []NodeGroup) error
	// CanMake reports why it cannot make nodes of the group's template
	// (nil: it can).
	CanMake(g NodeGroup) error
}

// FromSpec is the group a NodeGroup object describes.
func FromSpec(s *v1.NodeGroupSpec) NodeGroup {
	return NodeGroup{Name: s.GetName(), Provider: s.GetProvider(), Min: int(s.GetMinSize()), Max: int(s.GetMaxSize()), Zone: s.GetZone(),
		Template: Template{Labels: s.GetLabels(), Arch: s.GetArch(), Instances: s.GetInstancesPerNode(), MemoryBytes: s.GetMemoryBytes(),
			CPUMillis: s.GetCpuMillis(), Runtimes: s.GetRuntimes(), InstanceType: s.GetInstanceType()}}
}

// Spec is g as a NodeGroup object holds it.
func (g NodeGroup) Spec() *v1.NodeGroupSpec {
	t := g.Template
	return &v1.NodeGroupSpec{Name: g.Name, Provider: g.Provider, MinSize: int32(g.Min), MaxSize: int32(g.Max), Zone: g.Zone, InstancesPerNode: t.Instances,
		Labels: t.Labels, Arch: t.Arch, MemoryBytes: t.MemoryBytes, CpuMillis: t.CPUMillis, Runtimes: t.Runtimes, InstanceType: t.InstanceType}
}

// Equal reports whether two groups are configured alike.
func (g NodeGroup) Equal(o NodeGroup) bool {
	a, b := g.Spec(), o.Spec()
	return a.GetName() == b.GetName() && a.GetProvider() == b.GetProvider() && a.GetMinSize() == b.GetMinSize() && a.GetMaxSize() == b.GetMaxSize() &&
		a.GetZone() == b.GetZone() && a.GetInstancesPerNode() == b.GetInstancesPerNode() && maps.Equal(a.GetLabels(), b.GetLabels()) &&
		a.GetArch() == b.GetArch() && a.GetMemoryBytes() == b.GetMemoryBytes() && a.GetCpuMillis() == b.GetCpuMillis() && slices.Equal(a.GetRuntimes(), b.GetRuntimes()) &&
		a.GetInstanceType() == b.GetInstanceType()
}
