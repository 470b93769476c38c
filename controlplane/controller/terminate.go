package controller

import (
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/store"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Terminating instances, as Kubernetes has terminating pods: an instance
// the controller no longer wants (scale down, a new generation, a deleted
// workload, a drain) is not deleted while something of it may still run.
// It is marked terminating (Instance.terminating_unix_nano): it leaves
// the gateways' route tables and its workload's replicas at once, its
// node stops it (requests in flight drained, a container's SIGTERM and
// grace) and reports it Stopped, and only then is the record deleted.
// Meanwhile `get instances` shows it Terminating, it keeps its share of
// its node, and a rolling update counts it against max surge.
//
// What runs nowhere goes at once: an instance never placed, one its node
// has reported stopped already, one whose node was removed. One on a node
// that is not ready waits for the node: back, it stops the instance and
// reports it (shown Lost meanwhile, and not counted against max surge,
// since nothing can confirm it).

// retire ends an instance its workload no longer wants: deleted at once
// when nothing of it runs, else marked terminating. remove and mark add
// the writes to the pass.
func retire(inst store.Versioned[*v1.Instance], w *world, mark func(store.Versioned[*v1.Instance], *v1.Instance) error, remove func(store.Versioned[*v1.Instance])) error {
	v := inst.Value
	if gone(v, w) {
		remove(inst)
		return nil
	}
	if v.GetTerminatingUnixNano() != 0 {
		return nil // marked already: its node's report ends it
	}
	t := proto.Clone(v).(*v1.Instance) // the cache's copy is shared
	t.TerminatingUnixNano = time.Now().UnixNano()
	return mark(inst, t)
}

// gone says whether nothing of an instance runs any more, as far as the
// cluster can tell: it was never placed, its node was removed, or its node
// reported it stopped.
func gone(v *v1.Instance, w *world) bool {
	node := v.GetNode()
	if node == "" {
		return true
	}
	if _, exists := w.nodeByName[node]; !exists {
		return true
	}
	return cache.StoppedOnNode(v, w.statuses[v.GetId()])
}

// terminating handles an instance marked terminating (and not lost: a
// lost one is its node's, lostOrGone): deleted once gone. It reports
// whether the instance is terminating, and so out of its workload's
// replicas.
func (c *controller) terminating(inst store.Versioned[*v1.Instance], w *world, remove func(store.Versioned[*v1.Instance])) bool {
	v := inst.Value
	if v.GetTerminatingUnixNano() == 0 || v.GetLostUnixNano() != 0 {
		return false
	}
	switch {
	case gone(v, w):
		remove(inst)
	case w.alive[v.GetNode()]:
		w.terminating++ // still holds its place (rollingStep)
	}
	return true
}
