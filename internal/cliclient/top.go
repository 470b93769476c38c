package cliclient

import (
	"context"
	"errors"
	"io"
	"sort"

	"github.com/wasmorch/wasmorch/internal/cliout"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TopFilter says whose usage top shows: nodes, or the instances of a
// workload, on a node, or of workloads matching a label selector.
type TopFilter struct {
	Nodes    bool
	Workload string
	Node     string
	Selector string
}

// Top asks the workers what the instances (or the nodes) use now.
func (c *Client) Top(ctx context.Context, f TopFilter) ([]cliout.InstanceUsage, []cliout.NodeUsage, error) {
	if err := CheckLabelSelector(f.Selector); err != nil {
		return nil, nil, err
	}
	if err := c.connect(ctx); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.CallTimeout)
	defer cancel()
	stream, err := c.api.Top(ctx, &wasmorchv1.TopRequest{Nodes: f.Nodes, Workload: f.Workload, Node: f.Node, Selector: f.Selector})
	if err != nil {
		return nil, nil, c.failure(err, f.Workload)
	}
	var insts []cliout.InstanceUsage
	var nodes []cliout.NodeUsage
	for {
		rep, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, c.failure(err, f.Workload)
		}
		nodes = append(nodes, cliout.NodeUsageFrom(rep))
		insts = append(insts, cliout.InstanceUsagesFrom(rep)...)
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Name < nodes[j].Name })
	sort.Slice(insts, func(i, j int) bool {
		if insts[i].Workload != insts[j].Workload {
			return insts[i].Workload < insts[j].Workload
		}
		return insts[i].ID < insts[j].ID
	})
	return insts, nodes, nil
}
