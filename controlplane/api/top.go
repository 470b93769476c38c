package api

import (
	"context"
	"sort"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// topTimeout bounds how long a node may take to say what it uses (it
// samples its counters twice, a second apart, when it has no recent
// sample).
const topTimeout = 5 * time.Second

// topConcurrency bounds the nodes asked at once.
const topConcurrency = 16

// Top asks the workers what their instances (or they themselves) use,
// and streams each node's report as it comes; a node that cannot be asked
// is a report with its error.
func (a *controlAPI) Top(req *v1.TopRequest, stream v1.Control_TopServer) error {
	ctx := stream.Context()
	sel, err := parseSelector(req.GetSelector())
	if err != nil {
		return err
	}
	if req.GetNodes() && (req.GetWorkload() != "" || !sel.Empty()) {
		return errdefs.Invalidf("top of nodes takes no workload or selector: those narrow the instances")
	}
	if err := a.s.cache.Sync(ctx); err != nil {
		return err
	}
	type ask struct {
		node, addr string
		ready      bool
		capacity   *v1.Resources
		ids        []string
		workloads  []string // of ids
	}
	var asks []*ask
	missing := ""
	a.s.cache.Read(func(r cache.Reader) {
		if w := req.GetWorkload(); w != "" {
			if _, ok := r.Workload(w); !ok {
				missing = "workload " + w
				return
			}
		}
		if n := req.GetNode(); n != "" {
			if _, ok := r.Node(n); !ok {
				missing = "node " + n
				return
			}
		}
		byNode := map[string]*ask{}
		for _, n := range r.Nodes() {
			if req.GetNode() != "" && n.Value.GetName() != req.GetNode() {
				continue
			}
			k := &ask{node: n.Value.GetName(), addr: n.Value.GetAddress(), ready: n.Alive, capacity: n.Value.GetCapacity()}
			byNode[k.node] = k
			if req.GetNodes() {
				asks = append(asks, k)
			}
		}
		if req.GetNodes() {
			return
		}
		add := func(e cache.Instance) {
			k := byNode[e.Value.GetNode()]
			if k == nil {
				return
			}
			if len(k.ids) == 0 {
				asks = append(asks, k)
			}
			k.ids = append(k.ids, e.Value.GetId())
			k.workloads = append(k.workloads, e.Value.GetWorkload())
		}
		matches := map[string]bool{}
		for _, w := range r.Workloads() {
			name := w.Value.GetName()
			if (req.GetWorkload() == "" || name == req.GetWorkload()) && sel.Matches(w.Value.GetLabels()) {
				matches[name] = true
			}
		}
		if req.GetNode() != "" {
			for _, e := range r.InstancesOn(req.GetNode()) {
				if matches[e.Value.GetWorkload()] {
					add(e)
				}
			}
			return
		}
		for name := range matches {
			for _, e := range r.InstancesOf(name) {
				add(e)
			}
		}
	})
	if missing != "" {
		return errdefs.NotFoundf("%s not found", missing)
	}
	sort.Slice(asks, func(i, j int) bool { return asks[i].node < asks[j].node })
	reports := make(chan *v1.UsageReport)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(topConcurrency)
	go func() {
		for _, k := range asks {
			g.Go(func() error {
				rep := &v1.UsageReport{Node: k.node, Capacity: k.capacity}
				switch {
				case !k.ready:
					rep.Error = "node is not ready"
				case k.addr == "":
					rep.Error = "node has no address"
				default:
					got, err := a.s.workers.usage(gctx, k.node, k.addr, &v1.UsageRequest{Instances: k.ids})
					if err != nil {
						rep.Error = errdefs.FromGRPC(err).Error()
					} else {
						got.Capacity = k.capacity
						rep = got
					}
				}
				if rep.Error != "" {
					// Its instances are listed still, with why they are not measured.
					for i, id := range k.ids {
						rep.Instances = append(rep.Instances, &v1.InstanceUsage{Id: id, Workload: k.workloads[i], Unmeasured: true})
					}
				}
				select {
				case reports <- rep:
				case <-gctx.Done():
				}
				return nil
			})
		}
		_ = g.Wait()
		close(reports)
	}()
	for rep := range reports {
		if err := stream.Send(rep); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// usage asks one worker what it uses.
func (w *workerClients) usage(ctx context.Context, node, addr string, req *v1.UsageRequest) (*v1.UsageReport, error) {
	c, err := w.client(node, addr)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, topTimeout)
	defer cancel()
	return c.Usage(ctx, req)
}
