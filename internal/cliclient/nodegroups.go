package cliclient

import (
	"context"

	"github.com/wasmorch/wasmorch/internal/cliout"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/manifest"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// KindNodeGroups is what `get nodegroups` lists (docs/cloud.md).
const KindNodeGroups = "nodegroups"

// ListNodeGroups lists the node groups as the leader's cloud controller
// last recorded them.
func (c *Client) ListNodeGroups(ctx context.Context) ([]cliout.NodeGroup, error) {
	gs, _, err := c.NodeGroupsAt(ctx)
	return gs, err
}

// NodeGroupsAt lists the node groups and returns the list's revision,
// from which a watch of node groups misses nothing.
func (c *Client) NodeGroupsAt(ctx context.Context) ([]cliout.NodeGroup, int64, error) {
	resp, err := call(ctx, c, "", c.api.ListNodeGroups, &wasmorchv1.ListNodeGroupsRequest{})
	if err != nil {
		return nil, 0, err
	}
	return cliout.NodeGroups(resp.GetNodeGroups()), resp.GetRevision(), nil
}

// NodeGroupSpec is the API's form of a NodeGroup object.
func NodeGroupSpec(o manifest.Object) (*wasmorchv1.NodeGroupSpec, error) {
	s := o.NodeGroup
	mem, err := ParseMemory(s.Memory)
	if err != nil {
		return nil, Errorf("e.g. memory: 8Gi", "node group %s: spec.memory: %v", o.Metadata.Name, err)
	}
	cpu, err := ParseCPU(s.CPU)
	if err != nil {
		return nil, Errorf("e.g. cpu: 4000m or cpu: 4", "node group %s: spec.cpu: %v", o.Metadata.Name, err)
	}
	return &wasmorchv1.NodeGroupSpec{Name: o.Metadata.Name, Provider: s.Provider, MinSize: int32(s.Min), MaxSize: int32(s.Max), Zone: s.Zone,
		InstancesPerNode: int32(s.Instances), Labels: s.Labels, Arch: s.Arch, MemoryBytes: mem, CpuMillis: cpu, Runtimes: s.Runtimes, InstanceType: s.InstanceType}, nil
}

// ApplyNodeGroup applies a NodeGroup object (dryRun: only checks it and
// says what would change).
func (c *Client) ApplyNodeGroup(ctx context.Context, o manifest.Object, dryRun bool) (*wasmorchv1.NodeGroupApplyResponse, error) {
	spec, err := NodeGroupSpec(o)
	if err != nil {
		return nil, err
	}
	return call(ctx, c, "", c.api.ApplyNodeGroup, &wasmorchv1.NodeGroupApplyRequest{Spec: spec, DryRun: dryRun})
}

// DeleteNodeGroup deletes a NodeGroup object; configured says that a
// group of the server's config of that name applies again.
func (c *Client) DeleteNodeGroup(ctx context.Context, name string) (configured bool, err error) {
	resp, err := call(ctx, c, "", c.api.DeleteNodeGroup, &wasmorchv1.NodeGroupDeleteRequest{Name: name})
	return resp.GetConfigured(), nodeGroupFailure(err)
}

// DescribeNodeGroup gathers a group's description: its recorded status,
// its nodes (the cluster's, labelled with it, beside its provider's
// list) and its events.
func (c *Client) DescribeNodeGroup(ctx context.Context, name string) (cliout.NodeGroupDescription, error) {
	v, err := call(ctx, c, "", c.api.GetNodeGroup, &wasmorchv1.NodeGroupGetRequest{Name: name})
	if err != nil {
		return cliout.NodeGroupDescription{}, nodeGroupFailure(err)
	}
	var nodes []cliout.Node
	if _, err := c.NodePages(ctx, map[string]string{"node-group": name}, MaxChunkSize, func(ns []cliout.Node) error { nodes = append(nodes, ns...); return nil }); err != nil {
		return cliout.NodeGroupDescription{}, err
	}
	evs, err := c.events(ctx, "", "nodegroup/"+name)
	if err != nil {
		return cliout.NodeGroupDescription{}, err
	}
	return cliout.DescribeNodeGroup(v, nodes, evs), nil
}

// nodeGroupFailure gives a NotFound error its hint.
func nodeGroupFailure(err error) error {
	if e, ok := err.(*Error); ok && errdefs.IsNotFound(e.Cause) {
		e.Hint = "see 'wasmorch get nodegroups'"
	}
	return err
}
