package cache

import (
	"context"
	"sync"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

// history keeps the latest changes, so that a watch can start from a
// past revision (a client that listed, a session that reconnects)
// without reading etcd's own history. Every change with a revision above
// floor is kept.
type history struct {
	buf         []Change
	start, size int
	floor       int64
}

func newHistory(n int) *history { return &history{buf: make([]Change, n)} }

func (h *history) add(cs []Change) {
	for _, c := range cs {
		if c.Kind == KindLoad {
			continue // a report a second per function: not worth keeping
		}
		if h.size == len(h.buf) {
			h.floor = max(h.floor, h.buf[h.start].Rev)
			h.buf[h.start] = Change{}
			h.start = (h.start + 1) % len(h.buf)
			h.size--
		}
		h.buf[(h.start+h.size)%len(h.buf)] = c
		h.size++
	}
}

// since returns the changes after rev, or false when some of them are no
// longer kept.
func (h *history) since(rev int64) ([]Change, bool) {
	if rev < h.floor {
		return nil, false
	}
	// The buffer is in revision order: find the first change after rev.
	lo, hi := 0, h.size
	for lo < hi {
		mid := (lo + hi) / 2
		if h.buf[(h.start+mid)%len(h.buf)].Rev <= rev {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	out := make([]Change, 0, h.size-lo)
	for i := lo; i < h.size; i++ {
		out = append(out, h.buf[(h.start+i)%len(h.buf)])
	}
	return out, true
}

// NodeWatch follows the instances bound to one node, for the node's
// session: it collects the IDs of those that changed (were bound, changed,
// were unbound, lost or deleted) until the session takes them.
type NodeWatch struct {
	c    *Cache
	node string

	mu    sync.Mutex
	dirty map[string]struct{}
	rev   int64
	ch    chan struct{}
	// edge: with FollowWorkloads, the workloads whose record changed (not
	// only their counts) and whether the node's own record changed.
	workloads   map[string]struct{}
	nodeChanged bool
}

// WatchNode starts following node's instances. With since set and its
// changes still in the history, the watch starts with the IDs that
// changed since then (resumed); otherwise full is every instance bound to
// the node now (lost ones included: a session leaves those out). rev is
// the revision full, or the resumed changes, go up to.
func (c *Cache) WatchNode(node string, since int64) (w *NodeWatch, full []Instance, rev int64, resumed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w = &NodeWatch{c: c, node: node, dirty: map[string]struct{}{}, ch: make(chan struct{}, 1)}
	set := c.nodeWs[node]
	if set == nil {
		set = map[*NodeWatch]struct{}{}
		c.nodeWs[node] = set
	}
	set[w] = struct{}{}
	rev = c.s.rev
	w.rev = rev
	if since > 0 && since <= rev {
		if cs, ok := c.hist.since(since); ok {
			for _, ch := range cs {
				if ch.Kind == KindInstance && (ch.Node == node || ch.PrevNode == node) {
					w.dirty[ch.Name] = struct{}{}
				}
			}
			if len(w.dirty) > 0 {
				w.ch <- struct{}{}
			}
			return w, nil, rev, true
		}
	}
	return w, c.s.instancesOn(node), rev, false
}

// Changed is signalled when Take has something to return.
func (w *NodeWatch) Changed() <-chan struct{} { return w.ch }

// Take returns the IDs of the instances that changed since the last Take
// and the revision the cache had reached when the latest was marked.
func (w *NodeWatch) Take() (ids []string, rev int64) {
	// Not in the middle of a batch of changes being handed out: one
	// revision may bind several instances, and a take between their marks
	// would carry that revision with only some of them, so that a session
	// resuming from it would never hear of the others.
	w.c.mu.RLock()
	defer w.c.mu.RUnlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	ids = make([]string, 0, len(w.dirty))
	for id := range w.dirty {
		ids = append(ids, id)
	}
	clear(w.dirty)
	return ids, w.rev
}

// FollowWorkloads makes the watch also collect the workloads whose record
// changed (created, changed, deleted; not a change of their counts) and
// note changes of the node's own record, for TakeWorkloads (edge: the
// session of a node that starts functions cold on its local listener).
// Those changes cost work only for the watches that follow them. What
// changed before it was called is not collected: read the cache after it.
func (w *NodeWatch) FollowWorkloads() {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	w.mu.Lock()
	w.workloads = map[string]struct{}{}
	w.mu.Unlock()
	w.c.workloadWs[w] = struct{}{}
}

// TakeWorkloads returns the workloads that changed since the last call,
// and whether the node's record changed. They leave Take's revision as
// it is: that is where a session resumes its instances from, and a
// session sends its workloads whole when it starts.
func (w *NodeWatch) TakeWorkloads() (names []string, node bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	names = make([]string, 0, len(w.workloads))
	for n := range w.workloads {
		names = append(names, n)
	}
	clear(w.workloads)
	node, w.nodeChanged = w.nodeChanged, false
	return names, node
}

// Close ends the watch.
func (w *NodeWatch) Close() {
	w.c.mu.Lock()
	defer w.c.mu.Unlock()
	if set := w.c.nodeWs[w.node]; set != nil {
		delete(set, w)
		if len(set) == 0 {
			delete(w.c.nodeWs, w.node)
		}
	}
	delete(w.c.workloadWs, w)
}

// signal wakes the watch's owner.
func (w *NodeWatch) signal() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

func (w *NodeWatch) mark(id string, rev int64) {
	w.mu.Lock()
	w.dirty[id] = struct{}{}
	w.rev = rev
	w.mu.Unlock()
	w.signal()
}

// markWorkload notes a workload's change, or (name "") the node's.
func (w *NodeWatch) markWorkload(name string) {
	w.mu.Lock()
	if name == "" {
		w.nodeChanged = true
	} else {
		w.workloads[name] = struct{}{}
	}
	w.mu.Unlock()
	w.signal()
}

// dispatchToNodes hands instance changes to the watches of the nodes they
// concern, and workload and node changes to the watches that follow them
// (under the write lock).
func (c *Cache) dispatchToNodes(cs []Change) {
	if len(c.nodeWs) == 0 {
		return
	}
	for _, ch := range cs {
		if len(c.workloadWs) > 0 {
			switch {
			case ch.Kind == KindWorkload && !ch.CountsOnly:
				for w := range c.workloadWs {
					w.markWorkload(ch.Name)
				}
			case ch.Kind == KindNode:
				for w := range c.nodeWs[ch.Name] {
					if w.workloads != nil {
						w.markWorkload("")
					}
				}
			}
		}
		if ch.Kind != KindInstance {
			continue
		}
		for w := range c.nodeWs[ch.Node] {
			w.mark(ch.Name, ch.Rev)
		}
		if ch.PrevNode != ch.Node {
			for w := range c.nodeWs[ch.PrevNode] {
				w.mark(ch.Name, ch.Rev)
			}
		}
	}
}

// MaxWatchBacklog is how many changes a watcher may leave unread before
// it is ended (a client too slow to follow the cluster): it resumes from
// the last revision it read.
const MaxWatchBacklog = 50_000

// Watcher follows changes from a revision, for the API's Watch.
type Watcher struct {
	c      *Cache
	match  func(Change) bool
	cancel func()

	rev int64

	mu      sync.Mutex
	backlog []Change
	err     error
	ch      chan struct{}
}

// Watch returns the changes after since that match (since 0: from now),
// first those in the history, then as they come. A since older than the
// history is an ErrExpired: list again, and watch from the list's
// revision.
func (c *Cache) Watch(since int64, match func(Change) bool) (*Watcher, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &Watcher{c: c, match: match, ch: make(chan struct{}, 1), rev: c.s.rev}
	if since > 0 {
		w.rev = min(since, c.s.rev)
	}
	if since > 0 && since < c.s.rev {
		cs, ok := c.hist.since(since)
		if !ok {
			return nil, errdefs.Expiredf("revision %d is older than the changes this member keeps (from revision %d on): list again and watch from the list's revision", since, c.hist.floor+1)
		}
		w.push(cs)
	}
	id := c.nextID
	c.nextID++
	c.subs[id] = w.push
	w.cancel = func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.subs, id)
	}
	return w, nil
}

// Rev is the revision the watch started after: what a watch "from now"
// (since 0) delivers comes after it.
func (w *Watcher) Rev() int64 { return w.rev }

func (w *Watcher) push(cs []Change) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return
	}
	n := len(w.backlog)
	for _, ch := range cs {
		if w.match == nil || w.match(ch) {
			w.backlog = append(w.backlog, ch)
		}
	}
	if len(w.backlog) > MaxWatchBacklog {
		w.backlog = nil
		w.err = errdefs.Unavailablef("the watch fell more than %d changes behind the cluster: watch again from the last revision read", MaxWatchBacklog)
	}
	if len(w.backlog) > n || w.err != nil {
		select {
		case w.ch <- struct{}{}:
		default:
		}
	}
}

// Next returns the changes not yet read, waiting for some until ctx ends.
func (w *Watcher) Next(ctx context.Context) ([]Change, error) {
	for {
		w.mu.Lock()
		out, err := w.backlog, w.err
		w.backlog = nil
		w.mu.Unlock()
		if len(out) > 0 {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		select {
		case <-w.ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close ends the watch.
func (w *Watcher) Close() { w.cancel() }
