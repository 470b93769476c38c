package api

import (
	"cmp"
	"context"
	"errors"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/selector"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Watch streams the changes of one kind after a revision (docs/api.md).
// Workloads, instances and nodes come from the member's cache; events
// from etcd, which keeps them until it compacts. It is a Control call, so
// admins and members may make it and nodes may not (api_auth.go).
//
// What the stream carries:
//   - first a BOOKMARK with the revision the watch starts after;
//   - then, for each batch of changes the cache applies, one event per
//     changed object, as it is when the batch is sent (several changes
//     of one object come as one), followed by a BOOKMARK with the
//     batch's revision: a client that reconnects watches again from the
//     last BOOKMARK it received, and may see some objects twice;
//   - an object that is gone comes as DELETED with its last record. Every
//     other change is MODIFIED: the cache does not say whether an object
//     is new to the client, which may have listed it already. For a
//     deleted instance, its status (deleted with it) is not included:
//     its state reads Lost if it had been replaced, else Stopped.
//
// Events (kind EVENTS) come as ADDED, one per event recorded; events that
// expire are not reported.
func (a *controlAPI) Watch(req *v1.WatchRequest, stream v1.Control_WatchServer) error {
	kind := req.GetKind()
	if req.GetSelector() != "" && kind != v1.WatchKind_WATCH_KIND_WORKLOADS && kind != v1.WatchKind_WATCH_KIND_INSTANCES {
		return errdefs.Invalidf("a watch of %s takes no selector: selectors narrow a watch of workloads or instances", kindName(kind))
	}
	if _, err := parseSelector(req.GetSelector()); err != nil {
		return err
	}
	switch kind {
	case v1.WatchKind_WATCH_KIND_WORKLOADS, v1.WatchKind_WATCH_KIND_NODES, v1.WatchKind_WATCH_KIND_NODE_GROUPS:
		if req.GetWorkload() != "" || req.GetNode() != "" {
			return errdefs.Invalidf("a watch of %s takes no workload or node: those narrow a watch of instances or events", kindName(kind))
		}
	case v1.WatchKind_WATCH_KIND_INSTANCES:
	case v1.WatchKind_WATCH_KIND_EVENTS:
		if req.GetWorkload() != "" && req.GetNode() != "" {
			return errdefs.Invalidf("a watch of events follows one object: give a workload or a node, not both")
		}
	default:
		return errdefs.Invalidf("watch kind %v is not workloads, instances, nodes, events or node groups", kind)
	}
	if req.GetRevision() < 0 {
		return errdefs.Invalidf("revision %d is negative: pass a revision a list or watch returned, or 0 for from now", req.GetRevision())
	}
	// The stream ends, cleanly, when the member shuts down: the client
	// watches again, from its last revision, on another member.
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	go func() {
		select {
		case <-a.s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	var err error
	switch kind {
	case v1.WatchKind_WATCH_KIND_EVENTS:
		err = a.s.watchEvents(ctx, req, stream.Send)
	case v1.WatchKind_WATCH_KIND_NODE_GROUPS:
		err = a.s.watchNodeGroups(ctx, req, stream.Send) // cloud (nodegroups.go)
	default:
		err = a.s.watchCache(ctx, req, stream.Send)
	}
	if ctx.Err() != nil && stream.Context().Err() == nil {
		return nil // the member is stopping
	}
	return err
}

func kindName(k v1.WatchKind) string {
	switch k {
	case v1.WatchKind_WATCH_KIND_WORKLOADS:
		return "workloads"
	case v1.WatchKind_WATCH_KIND_INSTANCES:
		return "instances"
	case v1.WatchKind_WATCH_KIND_NODES:
		return "nodes"
	case v1.WatchKind_WATCH_KIND_EVENTS:
		return "events"
	case v1.WatchKind_WATCH_KIND_NODE_GROUPS:
		return "node groups"
	}
	return k.String()
}

// currentRevision is etcd's revision now (one linearizable read); a watch
// from a revision beyond it is refused rather than left waiting for a
// revision that may never come.
func (s *Server) currentRevision(ctx context.Context, want int64) (int64, error) {
	resp, err := s.store.Client.Get(ctx, store.Root, clientv3.WithCountOnly(), clientv3.WithLimit(1))
	if err != nil {
		return 0, errdefs.Unavailablef("read the cluster's revision: %v", err)
	}
	if want > resp.Header.Revision {
		return 0, errdefs.Invalidf("revision %d is ahead of the cluster's (%d): pass a revision a list or watch returned, or 0 for from now", want, resp.Header.Revision)
	}
	return resp.Header.Revision, nil
}

// watchKey names one object of a cache watch.
type watchKey struct {
	kind cache.Kind
	name string
}

// watchCache follows workloads, instances or nodes in the cache.
func (s *Server) watchCache(ctx context.Context, req *v1.WatchRequest, send func(*v1.WatchEvent) error) error {
	if _, err := s.currentRevision(ctx, req.GetRevision()); err != nil {
		return err
	}
	select {
	case <-s.cache.Synced():
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := s.cache.WaitFor(ctx, req.GetRevision()); err != nil {
		return err
	}
	kind, workload, node := req.GetKind(), req.GetWorkload(), req.GetNode()
	var match func(cache.Change) bool
	switch kind {
	case v1.WatchKind_WATCH_KIND_WORKLOADS:
		match = func(c cache.Change) bool { return c.Kind == cache.KindWorkload }
	case v1.WatchKind_WATCH_KIND_INSTANCES:
		match = func(c cache.Change) bool {
			return c.Kind == cache.KindInstance && (workload == "" || c.Workload == workload) &&
				(node == "" || c.Node == node || c.PrevNode == node)
		}
	case v1.WatchKind_WATCH_KIND_NODES:
		// A node's usage changes with the instances bound to it.
		match = func(c cache.Change) bool {
			return c.Kind == cache.KindNode || c.Kind == cache.KindInstance && (c.Node != "" || c.PrevNode != "")
		}
	}
	w, err := s.cache.Watch(req.GetRevision(), match)
	if err != nil {
		return err
	}
	defer w.Close()
	sel, _ := parseSelector(req.GetSelector()) // checked by Watch
	var shown *selectedSet
	if !sel.Empty() {
		shown = newSelectedSet(s.cache, kind, sel, workload, node)
	}
	if err := send(&v1.WatchEvent{Type: v1.WatchEventType_WATCH_EVENT_TYPE_BOOKMARK, Revision: w.Rev()}); err != nil {
		return err
	}
	// The usage of each node last sent (nodes only): an instance change
	// sends its node again only when what the node holds changed.
	sentUsage := map[string]cache.Usage{}
	for delivered := false; ; delivered = true {
		changes, err := w.Next(ctx)
		if errdefs.IsUnavailable(err) && !delivered {
			// Too many changes since the revision to catch up on: watching
			// again from it would fail again.
			return errdefs.Expiredf("revision %d is more than %d changes behind the cluster: list again and watch from the list's revision", w.Rev(), cache.MaxWatchBacklog)
		}
		if err != nil {
			return err
		}
		// One event per object, in the order of their last changes.
		last := map[watchKey]cache.Change{}
		var order []watchKey
		var rev int64
		for _, c := range changes {
			rev = max(rev, c.Rev)
			k := watchKey{c.Kind, c.Name}
			if kind == v1.WatchKind_WATCH_KIND_NODES && c.Kind == cache.KindInstance {
				// Instance changes stand for the nodes they concern
				// (CountsOnly marks them: sent only if the usage changed).
				for _, n := range []string{c.Node, c.PrevNode} {
					if n != "" {
						nk := watchKey{cache.KindNode, n}
						if _, ok := last[nk]; !ok {
							order = append(order, nk)
							last[nk] = cache.Change{Rev: c.Rev, Kind: cache.KindNode, Name: n, CountsOnly: true}
						}
					}
				}
				continue
			}
			if _, ok := last[k]; !ok {
				order = append(order, k)
			}
			last[k] = c
		}
		var evs []*v1.WatchEvent
		s.cache.Read(func(r cache.Reader) {
			for _, k := range order {
				ev := watchEvent(r, last[k], workload, node, sentUsage)
				if shown != nil {
					ev = shown.filter(r, ev)
				}
				if ev != nil {
					evs = append(evs, ev)
				}
			}
		})
		slices.SortStableFunc(evs, func(a, b *v1.WatchEvent) int { return cmp.Compare(a.GetRevision(), b.GetRevision()) })
		for _, ev := range evs {
			if err := send(ev); err != nil {
				return err
			}
		}
		if err := send(&v1.WatchEvent{Type: v1.WatchEventType_WATCH_EVENT_TYPE_BOOKMARK, Revision: rev}); err != nil {
			return err
		}
	}
}

// watchEvent is the event for an object's latest change in a batch, from
// the object as the cache holds it now (nil: nothing to send).
func watchEvent(r cache.Reader, c cache.Change, workload, node string, sentUsage map[string]cache.Usage) *v1.WatchEvent {
	ev := &v1.WatchEvent{Type: v1.WatchEventType_WATCH_EVENT_TYPE_MODIFIED, Revision: c.Rev}
	deleted := &v1.WatchEvent{Type: v1.WatchEventType_WATCH_EVENT_TYPE_DELETED, Revision: c.Rev}
	switch c.Kind {
	case cache.KindWorkload:
		if w, ok := r.Workload(c.Name); ok {
			ev.Object = &v1.WatchEvent_Workload{Workload: workloadView(r, w)}
			return ev
		}
		prev, ok := c.Prev.(*v1.Workload)
		if !ok {
			return nil // deleted after this change: its deletion comes next
		}
		deleted.Object = &v1.WatchEvent_Workload{Workload: &v1.WorkloadView{Workload: prev}}
		return deleted
	case cache.KindInstance:
		if e, ok := r.Instance(c.Name); ok {
			if node != "" && e.Value.GetNode() != node {
				// No longer on the node watched: gone from its view.
				deleted.Object = &v1.WatchEvent_Instance{Instance: instanceView(e)}
				return deleted
			}
			ev.Object = &v1.WatchEvent_Instance{Instance: instanceView(e)}
			return ev
		}
		prev, ok := c.Prev.(*v1.Instance)
		if !ok {
			return nil
		}
		if node != "" && prev.GetNode() != node || workload != "" && prev.GetWorkload() != workload {
			return nil
		}
		state := v1.InstanceState_INSTANCE_STATE_STOPPED
		if prev.GetLostUnixNano() != 0 {
			state = v1.InstanceState_INSTANCE_STATE_LOST
		}
		deleted.Object = &v1.WatchEvent_Instance{Instance: &v1.InstanceView{Instance: prev, State: state}}
		return deleted
	case cache.KindNode:
		n, ok := r.Node(c.Name)
		if !ok {
			prev, ok := c.Prev.(*v1.Node)
			if !ok {
				return nil // a node's instance changed after the node was removed
			}
			delete(sentUsage, c.Name)
			deleted.Object = &v1.WatchEvent_Node{Node: &v1.NodeView{Node: prev, Allocated: &v1.Resources{}}}
			return deleted
		}
		if was, sent := sentUsage[c.Name]; c.CountsOnly && sent && was == n.Used {
			return nil // an instance change that left the node's usage as it was
		}
		sentUsage[c.Name] = n.Used
		ev.Object = &v1.WatchEvent_Node{Node: nodeView(n)}
		return ev
	}
	return nil
}

// watchEvents follows the events recorded after a revision, straight
// from etcd.
func (s *Server) watchEvents(ctx context.Context, req *v1.WatchRequest, send func(*v1.WatchEvent) error) error {
	object := ""
	switch {
	case req.GetWorkload() != "":
		object = events.Workload(req.GetWorkload())
	case req.GetNode() != "":
		object = events.Node(req.GetNode())
	}
	return s.relayEtcd(ctx, req, events.PrefixOf(object), "events", false, func(ev *clientv3.Event) *v1.WatchEvent {
		if ev.Type != mvccpb.PUT {
			return nil // an event expired
		}
		e := &v1.Event{}
		if proto.Unmarshal(ev.Kv.Value, e) != nil {
			return nil
		}
		return &v1.WatchEvent{Type: v1.WatchEventType_WATCH_EVENT_TYPE_ADDED, Revision: ev.Kv.ModRevision, Object: &v1.WatchEvent_Event{Event: e}}
	}, send)
}

// relayEtcd streams the changes under prefix after the request's revision
// (the current one when it gives none) straight from etcd, for the kinds
// the member cache does not hold: a bookmark first and after each batch,
// and each change as convert makes it (nil: not sent). prevKV asks etcd
// for a deleted key's last value. what names the stream in errors.
func (s *Server) relayEtcd(ctx context.Context, req *v1.WatchRequest, prefix, what string, prevKV bool,
	convert func(*clientv3.Event) *v1.WatchEvent, send func(*v1.WatchEvent) error) error {
	rev, err := s.currentRevision(ctx, req.GetRevision())
	if err != nil {
		return err
	}
	if req.GetRevision() > 0 {
		rev = req.GetRevision()
	}
	if err := send(&v1.WatchEvent{Type: v1.WatchEventType_WATCH_EVENT_TYPE_BOOKMARK, Revision: rev}); err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(rev + 1)}
	if prevKV {
		opts = append(opts, clientv3.WithPrevKV())
	}
	for resp := range s.store.Client.Watch(wctx, prefix, opts...) {
		if err := resp.Err(); errors.Is(err, rpctypes.ErrCompacted) {
			return errdefs.Expiredf("revision %d is older than the changes this member keeps (from revision %d on): list again and watch from the list's revision", rev, resp.CompactRevision)
		} else if err != nil {
			return errdefs.Unavailablef("watch %s: %v", what, err)
		}
		var last int64
		for _, ev := range resp.Events {
			last = max(last, ev.Kv.ModRevision)
			if out := convert(ev); out != nil {
				if err := send(out); err != nil {
					return err
				}
			}
		}
		if last > 0 {
			if err := send(&v1.WatchEvent{Type: v1.WatchEventType_WATCH_EVENT_TYPE_BOOKMARK, Revision: last}); err != nil {
				return err
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errdefs.Unavailablef("the watch of %s ended: etcd has no leader; watch again from the last revision received", what)
}

// selectedSet is what a watch with a label selector has shown of its
// kind: an object that stops matching (its workload's labels changed) is
// sent as DELETED, once; one that starts matching as MODIFIED.
type selectedSet struct {
	sel   selector.Selector
	shown map[string]bool
}

// newSelectedSet starts with what matches now, which the client listed.
func newSelectedSet(c *cache.Cache, kind v1.WatchKind, sel selector.Selector, workload, node string) *selectedSet {
	s := &selectedSet{sel: sel, shown: map[string]bool{}}
	c.Read(func(r cache.Reader) {
		for _, w := range r.Workloads() {
			if !sel.Matches(w.Value.GetLabels()) {
				continue
			}
			if kind == v1.WatchKind_WATCH_KIND_WORKLOADS {
				s.shown[w.Value.GetName()] = true
				continue
			}
			if workload != "" && w.Value.GetName() != workload {
				continue
			}
			for _, e := range r.InstancesOf(w.Value.GetName()) {
				if node == "" || e.Value.GetNode() == node {
					s.shown[e.Value.GetId()] = true
				}
			}
		}
	})
	return s
}

// filter passes, turns into DELETED or drops one event of the watch.
func (s *selectedSet) filter(r cache.Reader, ev *v1.WatchEvent) *v1.WatchEvent {
	if ev == nil {
		return nil
	}
	var name string
	var labels map[string]string
	switch o := ev.GetObject().(type) {
	case *v1.WatchEvent_Workload:
		name, labels = o.Workload.GetWorkload().GetName(), o.Workload.GetWorkload().GetLabels()
	case *v1.WatchEvent_Instance:
		name = o.Instance.GetInstance().GetId()
		if w, ok := r.Workload(o.Instance.GetInstance().GetWorkload()); ok {
			labels = w.Value.GetLabels()
		}
	default:
		return ev
	}
	was := s.shown[name]
	if ev.GetType() == v1.WatchEventType_WATCH_EVENT_TYPE_DELETED {
		delete(s.shown, name)
		if was {
			return ev
		}
		return nil
	}
	if s.sel.Matches(labels) {
		s.shown[name] = true
		return ev
	}
	if !was {
		return nil
	}
	delete(s.shown, name)
	gone := proto.Clone(ev).(*v1.WatchEvent)
	gone.Type = v1.WatchEventType_WATCH_EVENT_TYPE_DELETED
	return gone
}
