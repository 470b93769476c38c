package cliout

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// NodeGroup is a node group as `get nodegroups` prints it.
type NodeGroup struct {
	Name             string            `json:"name"`
	Provider         string            `json:"provider"`
	Min              int32             `json:"min"`
	Max              int32             `json:"max"`
	Target           int32             `json:"target"`
	Ready            int32             `json:"ready"`
	Zone             string            `json:"zone,omitempty"`
	InstancesPerNode int32             `json:"instancesPerNode"`
	Labels           map[string]string `json:"labels,omitempty"`
	Arch             string            `json:"arch,omitempty"`
	MemoryBytes      int64             `json:"memoryBytes,omitempty"`
	CPUMillis        int64             `json:"cpuMillis,omitempty"`
	Runtimes         []string          `json:"runtimes,omitempty"`
	InstanceType     string            `json:"instanceType,omitempty"`
	// Source is where it is configured: config, manifest or plugin.
	Source string `json:"source,omitempty"`
	// Nodes are its nodes as its provider last listed them.
	Nodes   []ProviderNode `json:"nodes,omitempty"`
	Updated time.Time      `json:"updated"`
}

// ProviderNode is a node of a group as its provider lists it.
type ProviderNode struct {
	Name       string `json:"name"`
	ProviderID string `json:"providerId"`
	State      string `json:"state"` // the provider's: Creating, Running, Deleting
}

// NodeGroups converts the API's node groups.
func NodeGroups(gs []*wasmorchv1.NodeGroupStatus) []NodeGroup {
	out := make([]NodeGroup, 0, len(gs))
	for _, g := range gs {
		out = append(out, NodeGroupFrom(g))
	}
	return out
}

// NodeGroupFrom converts one of the API's node groups.
func NodeGroupFrom(g *wasmorchv1.NodeGroupStatus) NodeGroup {
	out := NodeGroup{Name: g.GetName(), Provider: g.GetProvider(), Min: g.GetMinSize(), Max: g.GetMaxSize(), Target: g.GetTargetSize(),
		Ready: g.GetReadyNodes(), Zone: g.GetZone(), InstancesPerNode: g.GetInstancesPerNode(), Labels: g.GetLabels(), Arch: g.GetArch(),
		MemoryBytes: g.GetMemoryBytes(), CPUMillis: g.GetCpuMillis(), Runtimes: g.GetRuntimes(), InstanceType: g.GetInstanceType(), Source: g.GetSource(),
		Updated: time.Unix(0, g.GetUpdatedUnixNano()).UTC()}
	for _, n := range g.GetNodes() {
		out.Nodes = append(out.Nodes, ProviderNode{Name: n.GetName(), ProviderID: n.GetProviderId(), State: n.GetState()})
	}
	return out
}

var nodeGroupHeader = []string{"NAME", "PROVIDER", "MIN", "MAX", "TARGET", "READY", "INSTANCES/NODE", "ZONE", "LABELS"}

func nodeGroupRow(g NodeGroup) []string {
	return []string{g.Name, g.Provider, fmt.Sprint(g.Min), fmt.Sprint(g.Max), fmt.Sprint(g.Target), fmt.Sprint(g.Ready),
		fmt.Sprint(g.InstancesPerNode), dash(g.Zone), dash(FormatLabels(g.Labels))}
}

// NodeGroups prints node groups as a list or watch streams them (`get
// nodegroups -w`).
func (s *Stream) NodeGroups(gs []NodeGroup, event string) error {
	if s.p.Format != Table {
		return writeObjects(s, gs, event)
	}
	rows := make([][]string, len(gs))
	for i, g := range gs {
		rows[i] = nodeGroupRow(g)
	}
	return s.table(nodeGroupHeader, rows, event)
}

// NodeGroupDescription is what `describe nodegroup` shows: the group as
// the leader's controller last recorded it, the NodeGroup applied for it
// (if any), its nodes as the cluster and its provider see them, and its
// events.
type NodeGroupDescription struct {
	Group   *NodeGroup      `json:"group,omitempty"` // nil until the controller has recorded it
	Applied bool            `json:"applied"`         // a NodeGroup object configures it
	Nodes   []NodeGroupNode `json:"nodes"`
	Events  []Event         `json:"events"`
}

// NodeGroupNode is one node of a group: its provider's view and the
// cluster's.
type NodeGroupNode struct {
	Name          string `json:"name"`
	ProviderID    string `json:"providerId,omitempty"`
	ProviderState string `json:"providerState,omitempty"` // "" when the provider does not list it
	State         string `json:"state"`                   // Ready, NotReady, or "-" when it has not joined
	Cordoned      bool   `json:"cordoned,omitempty"`
	Draining      bool   `json:"draining,omitempty"`
	Instances     int32  `json:"instances"`
}

// DescribeNodeGroup builds a group's description from its recorded
// status, whether a NodeGroup was applied for it, the cluster's nodes
// labelled with it and its events.
func DescribeNodeGroup(v *wasmorchv1.NodeGroupView, nodes []Node, evs []*wasmorchv1.Event) NodeGroupDescription {
	d := NodeGroupDescription{Applied: v.GetSpec() != nil, Events: Events(evs), Nodes: []NodeGroupNode{}}
	if v.GetStatus() != nil {
		g := NodeGroupFrom(v.GetStatus())
		d.Group = &g
	}
	joined := map[string]Node{}
	for _, n := range nodes {
		joined[n.Name] = n
	}
	listed := map[string]bool{}
	if d.Group != nil {
		for _, pn := range d.Group.Nodes {
			listed[pn.Name] = true
			gn := NodeGroupNode{Name: pn.Name, ProviderID: pn.ProviderID, ProviderState: pn.State, State: "-"}
			if n, ok := joined[pn.Name]; ok {
				gn.State, gn.Cordoned, gn.Draining, gn.Instances = n.State, n.Cordoned, n.Draining, n.Instances
			}
			d.Nodes = append(d.Nodes, gn)
		}
	}
	for _, n := range nodes {
		if !listed[n.Name] {
			d.Nodes = append(d.Nodes, NodeGroupNode{Name: n.Name, State: n.State, Cordoned: n.Cordoned, Draining: n.Draining, Instances: n.Instances})
		}
	}
	return d
}

// DescribeNodeGroup prints a group's description.
func (p Printer) DescribeNodeGroup(w io.Writer, name string, d NodeGroupDescription) error {
	if p.Format != Table {
		return p.encode(w, d)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 1, ' ', 0)
	field := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
	field("Name", name)
	if g := d.Group; g != nil {
		source := g.Source
		if d.Applied && source != "manifest" {
			source += " (a NodeGroup applied; the leader has not taken it yet)"
		}
		field("Provider", g.Provider)
		field("Source", dash(source))
		field("Size", fmt.Sprintf("min %d, max %d, target %d, %d Ready", g.Min, g.Max, g.Target, g.Ready))
		field("Instances/node", fmt.Sprint(g.InstancesPerNode))
		field("Zone", dash(g.Zone))
		field("Labels", dash(FormatLabels(g.Labels)))
		field("Arch", dash(g.Arch))
		field("Instance type", dash(g.InstanceType))
		if g.MemoryBytes > 0 {
			field("Memory", HumanBytes(g.MemoryBytes))
		}
		if g.CPUMillis > 0 {
			field("CPU", fmt.Sprintf("%dm", g.CPUMillis))
		}
		field("Recorded", Age(p.Now, g.Updated)+" ago")
	} else {
		field("Source", "manifest (applied; the leader's cloud controller has not recorded it yet)")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var b strings.Builder
	b.WriteString("\nNodes:\n")
	if len(d.Nodes) == 0 {
		b.WriteString("(none)\n")
	} else {
		rows := [][]string{{"NAME", "PROVIDER-ID", "PROVIDER-STATE", "STATE", "INSTANCES"}}
		for _, n := range d.Nodes {
			state := n.State
			switch {
			case n.Draining:
				state += ",Draining"
			case n.Cordoned:
				state += ",Cordoned"
			}
			rows = append(rows, []string{n.Name, dash(n.ProviderID), dash(n.ProviderState), state, fmt.Sprint(n.Instances)})
		}
		if err := writeTable(&b, rows); err != nil {
			return err
		}
	}
	b.WriteString("\nEvents:\n")
	if len(d.Events) == 0 {
		b.WriteString("(none)\n")
	} else {
		rows := [][]string{{"AGE", "REASON", "MESSAGE"}}
		for _, e := range d.Events {
			rows = append(rows, []string{Age(p.Now, e.Time), e.Reason, e.Message})
		}
		if err := writeTable(&b, rows); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// NodeGroups prints node groups.
func (p Printer) NodeGroups(w io.Writer, gs []NodeGroup) error {
	if p.Format != Table {
		return p.encode(w, gs)
	}
	rows := [][]string{nodeGroupHeader}
	for _, g := range gs {
		rows = append(rows, nodeGroupRow(g))
	}
	return writeTable(w, rows)
}
