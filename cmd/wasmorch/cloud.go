package main

import (
	"strings"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/controlplane"
	"github.com/wasmorch/wasmorch/controlplane/cloud"
	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
)

// addCloudFlags adds the cloud controller's flags to server (docs/cloud.md).
func addCloudFlags(cmd *cobra.Command, cp *controlplane.Config) {
	f := cmd.Flags()
	f.Var(&nodeGroupsValue{cp: cp}, "node-group", "a node group the cloud controller grows and shrinks, name=NAME,provider=local,min=N,max=N,instances=N[,zone=Z][,labels=k:v;k:v][,arch=A][,memory=SIZE][,cpu=MILLIS][,runtimes=R;R][,instance-type=T] (repeat for several; docs/cloud.md; a NodeGroup applied of the same name overrides it)")
	f.StringToStringVar(&cp.NodeProviders, "node-provider", nil, "an external node provider NAME=SOCKET: a plugin answering on that unix socket (e.g. 'wasmorch provider local --socket SOCKET'), whose node groups the cloud controller keeps (comma-separated or repeated)")
	f.DurationVar(&cp.ScaleDownDelay, "scale-down-delay", cloud.DefaultScaleDownDelay, "how long a node of a node group must hold no instance before it is deleted")
	f.DurationVar(&cp.NodeGrace, "node-grace", cp.NodeGrace, "how long a node may miss its heartbeats before it is NotReady and its instances are replaced")
}

// nodeGroupsValue is --node-group: each value one group, parsed at once so
// that a bad one is refused with the flag's name.
type nodeGroupsValue struct {
	cp   *controlplane.Config
	raw  []string
	seen bool
}

func (v *nodeGroupsValue) String() string {
	if len(v.raw) == 0 {
		return ""
	}
	return "[" + strings.Join(v.raw, " ") + "]"
}
func (v *nodeGroupsValue) Type() string { return "group" }

func (v *nodeGroupsValue) Set(s string) error {
	if !v.seen {
		v.seen = true
		v.raw, v.cp.NodeGroups = nil, nil
	}
	return v.Append(s)
}

// Append, Replace and GetSlice make it a pflag.SliceValue, which a list in
// the config file sets.
func (v *nodeGroupsValue) Append(s string) error {
	g, err := provider.ParseGroup(s, parseCapacity)
	if err != nil {
		return err
	}
	v.raw = append(v.raw, s)
	v.cp.NodeGroups = append(v.cp.NodeGroups, g)
	return nil
}

func (v *nodeGroupsValue) Replace(items []string) error {
	v.raw, v.cp.NodeGroups, v.seen = nil, nil, true
	for _, s := range items {
		if err := v.Append(s); err != nil {
			return err
		}
	}
	return nil
}

func (v *nodeGroupsValue) GetSlice() []string { return append([]string(nil), v.raw...) }
