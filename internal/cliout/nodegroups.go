package cliout

import (
	"fmt"
	"io"
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
	Updated          time.Time         `json:"updated"`
}

// NodeGroups converts the API's node groups.
func NodeGroups(gs []*wasmorchv1.NodeGroupStatus) []NodeGroup {
	out := make([]NodeGroup, 0, len(gs))
	for _, g := range gs {
		out = append(out, NodeGroup{Name: g.GetName(), Provider: g.GetProvider(), Min: g.GetMinSize(), Max: g.GetMaxSize(), Target: g.GetTargetSize(),
			Ready: g.GetReadyNodes(), Zone: g.GetZone(), InstancesPerNode: g.GetInstancesPerNode(), Labels: g.GetLabels(), Arch: g.GetArch(),
			Updated: time.Unix(0, g.GetUpdatedUnixNano()).UTC()})
	}
	return out
}

// NodeGroups prints node groups.
func (p Printer) NodeGroups(w io.Writer, gs []NodeGroup) error {
	if p.Format != Table {
		return p.encode(w, gs)
	}
	rows := [][]string{{"NAME", "PROVIDER", "MIN", "MAX", "TARGET", "READY", "INSTANCES/NODE", "ZONE", "LABELS"}}
	for _, g := range gs {
		rows = append(rows, []string{g.Name, g.Provider, fmt.Sprint(g.Min), fmt.Sprint(g.Max), fmt.Sprint(g.Target), fmt.Sprint(g.Ready),
			fmt.Sprint(g.InstancesPerNode), dash(g.Zone), dash(FormatLabels(g.Labels))})
	}
	return writeTable(w, rows)
}
