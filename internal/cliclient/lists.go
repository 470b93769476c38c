package cliclient

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc"

	"github.com/wasmorch/wasmorch/internal/cliout"
	"github.com/wasmorch/wasmorch/internal/selector"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// The list calls page (docs/api.md): each page is one call of at most a
// chunk of objects, and the client follows the continue token until the
// last page, handing each page on as it comes.

// DefaultChunkSize is how many objects one page of a list asks for (as
// kubectl's --chunk-size); MaxChunkSize is the most the server gives.
const (
	DefaultChunkSize = 500
	MaxChunkSize     = 5000
)

// pagedResponse is a page of any list.
type pagedResponse interface {
	GetContinue() string
	GetRevision() int64
}

// pages calls rpc for every page of a list, from req (whose continue
// setNext sets), and hands each page to page. It returns the first
// page's revision: a watch from it misses no change made while paging.
func pages[Req any, Resp pagedResponse](ctx context.Context, c *Client, workload string, rpc func(context.Context, Req, ...grpc.CallOption) (Resp, error),
	req Req, setNext func(string), page func(Resp) error) (int64, error) {
	var first int64
	for {
		resp, err := call(ctx, c, workload, rpc, req)
		if err != nil {
			return 0, err
		}
		if first == 0 {
			first = resp.GetRevision()
		}
		if err := page(resp); err != nil {
			return 0, err
		}
		next := resp.GetContinue()
		if next == "" {
			return first, nil
		}
		setNext(next)
	}
}

// checkChunk refuses a chunk size the server would; 0 is the server's
// default page.
func checkChunk(chunk int) error {
	if chunk < 0 || chunk > MaxChunkSize {
		return Errorf(fmt.Sprintf("pass --chunk-size between 1 and %d (0: the server's default page)", MaxChunkSize), "--chunk-size %d is out of range", chunk)
	}
	return nil
}

// WorkloadPages lists every workload whose labels match selector (""
// for all), a page of chunk at a time.
func (c *Client) WorkloadPages(ctx context.Context, selector string, chunk int, page func([]cliout.Workload) error) (int64, error) {
	if err := checkChunk(chunk); err != nil {
		return 0, err
	}
	if err := CheckLabelSelector(selector); err != nil {
		return 0, err
	}
	req := &wasmorchv1.ListWorkloadsRequest{Limit: int32(chunk), Selector: selector}
	return pages(ctx, c, "", c.api.ListWorkloads, req, func(next string) { req.Continue = next },
		func(resp *wasmorchv1.ListWorkloadsResponse) error { return page(cliout.Workloads(resp.GetWorkloads())) })
}

// GetWorkload reads one workload.
func (c *Client) GetWorkload(ctx context.Context, name string) (cliout.Workload, error) {
	wv, err := call(ctx, c, name, c.api.GetWorkload, &wasmorchv1.GetWorkloadRequest{Name: name})
	if err != nil {
		return cliout.Workload{}, err
	}
	return cliout.WorkloadFrom(wv), nil
}

// WorkloadAt reads one workload, and a revision from which a watch
// misses none of its changes since it was read.
func (c *Client) WorkloadAt(ctx context.Context, name string) (cliout.Workload, int64, error) {
	// A list's revision is the member's, taken before the read: the
	// workload as read is at least that recent.
	l, err := call(ctx, c, name, c.api.ListWorkloads, &wasmorchv1.ListWorkloadsRequest{Limit: 1})
	if err != nil {
		return cliout.Workload{}, 0, err
	}
	w, err := c.GetWorkload(ctx, name)
	return w, l.GetRevision(), err
}

// InstanceFilter selects instances; empty fields select all.
type InstanceFilter struct {
	Workload string
	Node     string
	// States are state names (Running, pending ...): any of them.
	States []string
	// Selector keeps the instances of workloads whose labels match it.
	Selector string
}

// request is the list request of f, or an error naming a state that is
// not one.
func (f InstanceFilter) request(chunk int) (*wasmorchv1.ListInstancesRequest, error) {
	states, err := ParseStates(f.States)
	if err != nil {
		return nil, err
	}
	if err := CheckLabelSelector(f.Selector); err != nil {
		return nil, err
	}
	return &wasmorchv1.ListInstancesRequest{Workload: f.Workload, Node: f.Node, States: states, Limit: int32(chunk), Selector: f.Selector}, nil
}

// ParseStates turns instance state names (any case; "Running",
// "pending") into states.
func ParseStates(names []string) ([]wasmorchv1.InstanceState, error) {
	var out []wasmorchv1.InstanceState
	for _, n := range names {
		s, ok := stateNamed(n)
		if !ok {
			return nil, Errorf("use "+strings.Join(stateNames(), ", "), "--state %q is not an instance state", n)
		}
		out = append(out, s)
	}
	return out, nil
}

func stateNamed(name string) (wasmorchv1.InstanceState, bool) {
	for v := range wasmorchv1.InstanceState_name {
		s := wasmorchv1.InstanceState(v)
		if s != wasmorchv1.InstanceState_INSTANCE_STATE_UNSPECIFIED && strings.EqualFold(cliout.StateName(s), strings.TrimSpace(name)) {
			return s, true
		}
	}
	return 0, false
}

func stateNames() []string {
	var out []string
	for v := int32(1); ; v++ {
		if _, ok := wasmorchv1.InstanceState_name[v]; !ok {
			return out
		}
		out = append(out, cliout.StateName(wasmorchv1.InstanceState(v)))
	}
}

// InstancePages lists the instances f selects, a page of chunk at a time.
func (c *Client) InstancePages(ctx context.Context, f InstanceFilter, chunk int, page func([]cliout.Instance) error) (int64, error) {
	if err := checkChunk(chunk); err != nil {
		return 0, err
	}
	req, err := f.request(chunk)
	if err != nil {
		return 0, err
	}
	return pages(ctx, c, f.Workload, c.api.ListInstances, req, func(next string) { req.Continue = next },
		func(resp *wasmorchv1.ListInstancesResponse) error { return page(cliout.Instances(resp.GetInstances())) })
}

// NodePages lists the nodes carrying every label of selector, a page of
// chunk at a time.
func (c *Client) NodePages(ctx context.Context, selector map[string]string, chunk int, page func([]cliout.Node) error) (int64, error) {
	if err := checkChunk(chunk); err != nil {
		return 0, err
	}
	req := &wasmorchv1.ListNodesRequest{Selector: selector, Limit: int32(chunk)}
	return pages(ctx, c, "", c.api.ListNodes, req, func(next string) { req.Continue = next },
		func(resp *wasmorchv1.ListNodesResponse) error { return page(cliout.Nodes(resp.GetNodes())) })
}

// EventPages lists the events of object ("workload/NAME", "node/NAME";
// "" for all), a page of chunk at a time: one object's oldest first, all
// objects' object by object.
func (c *Client) EventPages(ctx context.Context, object string, chunk int, page func([]cliout.Event) error) (int64, error) {
	if err := checkChunk(chunk); err != nil {
		return 0, err
	}
	req := &wasmorchv1.ListEventsRequest{Object: object, Limit: int32(chunk)}
	return pages(ctx, c, "", c.api.ListEvents, req, func(next string) { req.Continue = next },
		func(resp *wasmorchv1.ListEventsResponse) error {
			out := make([]cliout.Event, 0, len(resp.GetEvents()))
			for _, e := range resp.GetEvents() {
				out = append(out, cliout.EventFrom(e))
			}
			return page(out)
		})
}

// CheckLabelSelector refuses, in one line, a label selector that does not
// parse, before it is sent.
func CheckLabelSelector(s string) error {
	if _, err := selector.Parse(s); err != nil {
		return Errorf("use -l key=value, key!=value, key or !key, comma-separated", "invalid -l: %v", err)
	}
	return nil
}

// ListWorkloads lists every workload.
func (c *Client) ListWorkloads(ctx context.Context) ([]cliout.Workload, error) {
	var out []cliout.Workload
	_, err := c.WorkloadPages(ctx, "", MaxChunkSize, func(ws []cliout.Workload) error { out = append(out, ws...); return nil })
	return out, err
}

// ListInstances lists the instances of one workload, or of all when
// workload is empty.
func (c *Client) ListInstances(ctx context.Context, workload string) ([]cliout.Instance, error) {
	views, err := c.instanceViews(ctx, &wasmorchv1.ListInstancesRequest{Workload: workload})
	if err != nil {
		return nil, err
	}
	return cliout.Instances(views), nil
}

// ListNodes lists every node.
func (c *Client) ListNodes(ctx context.Context) ([]cliout.Node, error) {
	var out []cliout.Node
	_, err := c.NodePages(ctx, nil, MaxChunkSize, func(ns []cliout.Node) error { out = append(out, ns...); return nil })
	return out, err
}

// instanceViews reads every page of an instance list.
func (c *Client) instanceViews(ctx context.Context, req *wasmorchv1.ListInstancesRequest) ([]*wasmorchv1.InstanceView, error) {
	if req.Limit == 0 {
		req.Limit = MaxChunkSize
	}
	var out []*wasmorchv1.InstanceView
	_, err := pages(ctx, c, req.GetWorkload(), c.api.ListInstances, req, func(next string) { req.Continue = next },
		func(resp *wasmorchv1.ListInstancesResponse) error {
			out = append(out, resp.GetInstances()...)
			return nil
		})
	return out, err
}

// nodeView reads one node (there is no call for one: the pages of every
// node are read until it turns up).
func (c *Client) nodeView(ctx context.Context, name string) (*wasmorchv1.NodeView, error) {
	req := &wasmorchv1.ListNodesRequest{Limit: MaxChunkSize}
	var found *wasmorchv1.NodeView
	_, err := pages(ctx, c, "", c.api.ListNodes, req, func(next string) { req.Continue = next },
		func(resp *wasmorchv1.ListNodesResponse) error {
			for _, nv := range resp.GetNodes() {
				if nv.GetNode().GetName() == name {
					found = nv
				}
			}
			return nil
		})
	return found, err
}

// events reads every page of an object's events.
func (c *Client) events(ctx context.Context, workload, object string) ([]*wasmorchv1.Event, error) {
	req := &wasmorchv1.ListEventsRequest{Object: object, Limit: MaxChunkSize}
	var out []*wasmorchv1.Event
	_, err := pages(ctx, c, workload, c.api.ListEvents, req, func(next string) { req.Continue = next },
		func(resp *wasmorchv1.ListEventsResponse) error { out = append(out, resp.GetEvents()...); return nil })
	return out, err
}
