package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/httptrigger"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// logTargets is which instances' output a Logs call reads, by node.
type logTargets struct {
	byNode map[string][]string
	addrs  map[string]string
	rev    int64 // the cache's revision when they were read
}

// Logs gathers the workload's instance output from the workers that hold
// it; with follow, it goes on with what they write, following the
// workload's new instances too, until the client ends the call or the
// workload is deleted.
func (a *controlAPI) Logs(req *v1.LogsRequest, stream v1.Control_LogsServer) error {
	if req.GetTailBytes() < 0 || req.GetTailLines() < -1 {
		return errdefs.Invalidf("tail_bytes %d must be 0 or more and tail_lines %d -1 or more", req.GetTailBytes(), req.GetTailLines())
	}
	ctx := stream.Context()
	if err := a.s.cache.Sync(ctx); err != nil {
		return err
	}
	name, only := req.GetWorkload(), req.GetInstance()
	var t logTargets
	found, instFound := false, only == ""
	a.s.cache.Read(func(r cache.Reader) {
		w, ok := r.Workload(name)
		if !ok {
			return
		}
		found = true
		t = logTargets{byNode: map[string][]string{}, addrs: map[string]string{}, rev: r.Rev()}
		for _, e := range r.InstancesOf(name) {
			if only != "" && e.Value.GetId() != only {
				continue
			}
			instFound = true
			if n := e.Value.GetNode(); n != "" {
				t.byNode[n] = append(t.byNode[n], e.Value.GetId())
			}
		}
		// A function may have been served cold (before a replica existed)
		// on any node that runs its kind: ask every such node for that
		// output too.
		if spec := w.Value.GetSpec(); spec.GetHttp() != nil && only == "" {
			for _, n := range r.Nodes() {
				if slices.Contains(n.Value.GetRuntimes(), spec.GetKind()) {
					t.byNode[n.Value.GetName()] = append(t.byNode[n.Value.GetName()], httptrigger.ColdLogID(name))
				}
			}
		}
		for n := range t.byNode {
			if node, ok := r.Node(n); ok {
				t.addrs[n] = node.Value.GetAddress()
			}
		}
	})
	if !found {
		return errdefs.NotFoundf("workload %q not found", name)
	}
	if !instFound {
		return errdefs.NotFoundf("instance %q of workload %q not found", only, name)
	}
	wreq := &v1.InstanceLogsRequest{TailBytes: req.GetTailBytes(), TailLines: req.GetTailLines(),
		SinceUnixNano: req.GetSinceUnixNano(), Timestamps: req.GetTimestamps(), Follow: req.GetFollow()}
	if req.GetFollow() {
		return a.s.followLogs(ctx, name, only, t, wreq, stream.Send)
	}
	var unreachable []error
	for _, node := range sortedNodes(t.byNode) {
		addr := t.addrs[node]
		if addr == "" {
			continue
		}
		r := cloneLogsRequest(wreq, t.byNode[node])
		if err := a.s.workers.logs(ctx, node, addr, r, stream.Send); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			unreachable = append(unreachable, errdefs.Unavailablef("node %s at %s: %v", node, addr, err))
		}
	}
	if len(unreachable) > 0 {
		return errdefs.Unavailablef("logs from some nodes could not be read: %v", errors.Join(unreachable...))
	}
	return nil
}

func sortedNodes(byNode map[string][]string) []string {
	nodes := make([]string, 0, len(byNode))
	for n := range byNode {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	return nodes
}

func cloneLogsRequest(r *v1.InstanceLogsRequest, ids []string) *v1.InstanceLogsRequest {
	ids = slices.Clone(ids)
	sort.Strings(ids)
	return &v1.InstanceLogsRequest{Instances: ids, TailBytes: r.GetTailBytes(), TailLines: r.GetTailLines(),
		SinceUnixNano: r.GetSinceUnixNano(), Timestamps: r.GetTimestamps(), Follow: r.GetFollow()}
}

// logStream is one follow stream to one worker, for some instances;
// it is ended once they are all gone.
type logStream struct {
	cancel context.CancelFunc
	live   int
}

// followLogs follows the output of the instances in t and of those the
// workload gets later, each through its node's worker, sending what comes
// through send (one at a time). It ends, after a last chunk saying so,
// when the workload is deleted.
func (s *Server) followLogs(ctx context.Context, workload, only string, t logTargets, req *v1.InstanceLogsRequest, send func(*v1.LogChunk) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.cache.Watch(t.rev, func(c cache.Change) bool {
		return c.Kind == cache.KindWorkload && c.Name == workload || c.Kind == cache.KindInstance && c.Workload == workload
	})
	if err != nil {
		return err
	}
	defer w.Close()

	var mu sync.Mutex
	sendOne := func(c *v1.LogChunk) error {
		mu.Lock()
		defer mu.Unlock()
		return send(c)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	failed := make(chan error, 1)
	streams := map[string]*logStream{} // by instance ID
	start := func(node, addr string, ids []string, r *v1.InstanceLogsRequest) {
		if addr == "" {
			_ = sendOne(&v1.LogChunk{Notice: fmt.Sprintf("node %s has no address for logs; skipping %d instance(s)", node, len(ids))})
			return
		}
		sctx, scancel := context.WithCancel(ctx)
		ls := &logStream{cancel: scancel}
		for _, id := range ids {
			if id != httptrigger.ColdLogID(workload) {
				ls.live++
				streams[id] = ls
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer scancel()
			err := s.workers.follow(sctx, node, addr, cloneLogsRequest(r, ids), sendOne)
			if errors.Is(err, io.EOF) || sctx.Err() != nil {
				return // the worker ended it: its instances are gone
			}
			if status := errdefs.FromGRPC(err); errdefs.IsUnavailable(status) {
				_ = sendOne(&v1.LogChunk{Notice: fmt.Sprintf("lost the output of node %s at %s: %v", node, addr, status)})
				return
			}
			select {
			case failed <- err:
			default:
			}
		}()
	}
	for _, node := range sortedNodes(t.byNode) {
		start(node, t.addrs[node], t.byNode[node], req)
	}
	// A new instance is followed from its first line.
	fresh := cloneLogsRequest(req, nil)
	fresh.TailBytes, fresh.TailLines, fresh.SinceUnixNano = 0, 0, 0
	for {
		changes, err := w.Next(ctx)
		if err != nil {
			select {
			case ferr := <-failed:
				return ferr
			default:
			}
			if ctx.Err() != nil {
				return nil
			}
			if errdefs.IsUnavailable(err) {
				return errdefs.Unavailablef("the workload changed faster than its logs could be followed: run 'wasmorch logs -f %s' again", workload)
			}
			return err
		}
		for _, c := range changes {
			switch {
			case c.Kind == cache.KindWorkload && c.Deleted:
				return sendOne(&v1.LogChunk{WorkloadDeleted: true, Notice: fmt.Sprintf("workload %s was deleted", workload)})
			case c.Kind != cache.KindInstance:
			case c.Deleted:
				if ls, ok := streams[c.Name]; ok {
					delete(streams, c.Name)
					if ls.live--; ls.live == 0 {
						ls.cancel()
					}
				}
			case c.Node != "" && streams[c.Name] == nil && (only == "" || c.Name == only):
				addr := ""
				s.cache.Read(func(r cache.Reader) {
					if n, ok := r.Node(c.Node); ok {
						addr = n.Value.GetAddress()
					}
				})
				start(c.Node, addr, []string{c.Name}, fresh)
			}
		}
	}
}

// follow streams a worker's InstanceLogs with follow set, for as long as
// ctx lasts.
func (w *workerClients) follow(ctx context.Context, node, addr string, req *v1.InstanceLogsRequest, send func(*v1.LogChunk) error) error {
	c, err := w.client(node, addr)
	if err != nil {
		return err
	}
	stream, err := c.InstanceLogs(ctx, req)
	if err != nil {
		return err
	}
	for {
		chunk, err := stream.Recv()
		if err != nil {
			return err // io.EOF: the worker ended it (its instances are gone)
		}
		if err := send(chunk); err != nil {
			return err
		}
	}
}
