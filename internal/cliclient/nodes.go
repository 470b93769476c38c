package cliclient

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/wasmorch/wasmorch/internal/cliout"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// DefaultDrainTimeout is how long drain waits for a node to empty.
const DefaultDrainTimeout = 2 * time.Minute

// Cordon stops new placements on a node.
func (c *Client) Cordon(ctx context.Context, node string) (cliout.Node, error) {
	nv, err := call(ctx, c, "", c.api.CordonNode, &wasmorchv1.NodeRequest{Name: node})
	if err != nil {
		err = nodeFailure(err, node)
		return cliout.Node{}, err
	}
	return cliout.NodeFrom(nv), nil
}

// Uncordon allows placements on a node again and ends a drain.
func (c *Client) Uncordon(ctx context.Context, node string) (cliout.Node, error) {
	nv, err := call(ctx, c, "", c.api.UncordonNode, &wasmorchv1.NodeRequest{Name: node})
	if err != nil {
		err = nodeFailure(err, node)
		return cliout.Node{}, err
	}
	return cliout.NodeFrom(nv), nil
}

// Drain cordons a node and waits, at most timeout (0: do not wait), until
// the controller has moved every instance away. progress is told how many
// instances remain.
func (c *Client) Drain(ctx context.Context, node string, timeout time.Duration, progress func(string)) (cliout.Node, error) {
	nv, err := call(ctx, c, "", c.api.DrainNode, &wasmorchv1.NodeRequest{Name: node})
	if err != nil {
		err = nodeFailure(err, node)
		return cliout.Node{}, err
	}
	if timeout <= 0 {
		return cliout.NodeFrom(nv), nil
	}
	deadline := time.Now().Add(timeout)
	for {
		left, err := c.instancesOn(ctx, node)
		if err != nil {
			return cliout.Node{}, err
		}
		if len(left) == 0 {
			return cliout.NodeFrom(nv), nil
		}
		if progress != nil {
			progress(fmt.Sprintf("draining %s: %d instance%s left", node, len(left), plural(len(left))))
		}
		if time.Now().After(deadline) {
			return cliout.Node{}, Errorf("see 'wasmorch get instances' for why their replacements are not running; run drain again to keep waiting, or 'wasmorch uncordon "+node+"' to stop",
				"node %s still holds %d instance%s after %s: %s", node, len(left), plural(len(left)), timeout, describeLeft(left))
		}
		select {
		case <-ctx.Done():
			return cliout.Node{}, c.failure(ctx.Err(), "")
		case <-time.After(pollInterval):
		}
	}
}

// instancesOn lists the instances bound to node that are not lost.
func (c *Client) instancesOn(ctx context.Context, node string) ([]*wasmorchv1.InstanceView, error) {
	views, err := c.instanceViews(ctx, &wasmorchv1.ListInstancesRequest{Node: node})
	if err != nil {
		return nil, err
	}
	var out []*wasmorchv1.InstanceView
	for _, iv := range views {
		if iv.GetInstance().GetLostUnixNano() == 0 {
			out = append(out, iv)
		}
	}
	return out, nil
}

func describeLeft(left []*wasmorchv1.InstanceView) string {
	ids := make([]string, 0, len(left))
	for _, iv := range left {
		ids = append(ids, iv.GetInstance().GetId())
	}
	sort.Strings(ids)
	if len(ids) > 5 {
		ids = append(ids[:5], "...")
	}
	return strings.Join(ids, ", ")
}

// RemoveNode forgets a node; force also removes a Ready one. It returns
// how many instances the node held (replaced elsewhere).
func (c *Client) RemoveNode(ctx context.Context, node string, force bool) (int, error) {
	resp, err := call(ctx, c, "", c.api.RemoveNode, &wasmorchv1.RemoveNodeRequest{Name: node, Force: force})
	if err != nil {
		err = nodeFailure(err, node)
		return 0, err
	}
	return int(resp.GetLostInstances()), nil
}

// DescribeWorkload gathers a workload's spec, instances and events.
func (c *Client) DescribeWorkload(ctx context.Context, name string) (cliout.WorkloadDescription, error) {
	var d cliout.WorkloadDescription
	wv, err := call(ctx, c, name, c.api.GetWorkload, &wasmorchv1.GetWorkloadRequest{Name: name})
	if err != nil {
		return d, err
	}
	insts, err := c.instanceViews(ctx, &wasmorchv1.ListInstancesRequest{Workload: name})
	if err != nil {
		return d, err
	}
	evs, err := c.events(ctx, name, "workload/"+name)
	if err != nil {
		return d, err
	}
	return cliout.DescribeWorkload(wv, insts, evs), nil
}

// DescribeNode gathers a node's record, its instances and its events.
func (c *Client) DescribeNode(ctx context.Context, name string) (cliout.NodeDescription, error) {
	var d cliout.NodeDescription
	nv, err := c.nodeView(ctx, name)
	if err != nil {
		return d, err
	}
	if nv == nil {
		return d, Errorf("see 'wasmorch get nodes'", "node %q not found", name)
	}
	mine, err := c.instanceViews(ctx, &wasmorchv1.ListInstancesRequest{Node: name})
	if err != nil {
		return d, err
	}
	evs, err := c.events(ctx, "", "node/"+name)
	if err != nil {
		return d, err
	}
	return cliout.DescribeNode(nv, mine, evs), nil
}

// nodeFailure names the node a NotFound error is about.
func nodeFailure(err error, node string) error {
	if errdefs.IsNotFound(err) {
		return &Error{What: fmt.Sprintf("node %q not found", node), Hint: "see 'wasmorch get nodes'", Cause: err}
	}
	return err
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
