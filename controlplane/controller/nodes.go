package controller

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/store"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Node health and placement hygiene, as the controller applies them when
// it reconciles a workload (a change to a node has every workload with an
// instance on it reconciled):
//
//   - an instance whose node is not ready (its lease expired) is marked
//     Lost; the workload's replica count no longer includes it, so the
//     same pass creates and schedules its replacement elsewhere;
//   - a lost instance is deleted once its node is ready again (the node's
//     desired set already left it out, so the worker has stopped it) or
//     once the node is removed;
//   - an instance on a draining node is evicted: it stops counting towards
//     its workload's replicas, so a replacement is created at once, and it
//     is removed only when the replacements running elsewhere keep the
//     workload fully available.

// lostOrGone handles an instance bound to a node that is not ready or no
// longer exists. It reports whether the instance is lost (and so out of
// its workload's count); mark and remove add the writes to the pass.
func (c *controller) lostOrGone(inst *store.Versioned[*v1.Instance], w *world, mark func(store.Versioned[*v1.Instance], *v1.Instance) error, remove func(store.Versioned[*v1.Instance])) (bool, error) {
	v := inst.Value
	node := v.GetNode()
	if node == "" {
		return false, nil
	}
	_, exists := w.nodeByName[node]
	switch {
	case v.GetLostUnixNano() != 0 && (w.alive[node] || !exists):
		remove(*inst)
		return true, nil
	case v.GetLostUnixNano() != 0:
		return true, nil
	case w.alive[node] && exists:
		return false, nil
	}
	lost := proto.Clone(v).(*v1.Instance)
	lost.LostUnixNano = time.Now().UnixNano()
	why := "stopped answering"
	if !exists {
		why = "was removed"
		remove(*inst)
	} else if err := mark(*inst, lost); err != nil {
		return false, err
	}
	inst.Value = lost
	c.note(events.Workload(v.GetWorkload()), "InstanceLost", "instance %s is lost: node %s %s; replacing it", v.GetId(), node, why)
	return true, nil
}

// nodeTransition records NodeReady and NodeNotReady events when a node's
// readiness changed since this leader last looked at it (the first look
// only takes note).
func (c *controller) nodeTransition(name string, known, was, exists, alive bool) {
	if !known || !exists || alive == was {
		return
	}
	if alive {
		c.note(events.Node(name), "NodeReady", "node %s is ready", name)
	} else {
		c.note(events.Node(name), "NodeNotReady", "node %s missed its heartbeats: its lease expired", name)
	}
}

// evictions picks which instances on draining nodes can go now: those not
// ready at once, ready ones only as far as the workload's other ready
// instances keep it at its replica count.
func evictions(evicting []store.Versioned[*v1.Instance], readyElsewhere, want int, w *world) []store.Versioned[*v1.Instance] {
	var out, ready []store.Versioned[*v1.Instance]
	for _, inst := range evicting {
		if isReady(inst.Value, w.statuses[inst.Name], w.alive) {
			ready = append(ready, inst)
		} else {
			out = append(out, inst)
		}
	}
	removable := max(0, readyElsewhere+len(ready)-want)
	return append(out, ready[:min(removable, len(ready))]...)
}

// note queues an event; the pass records its queued events in one write
// once its decisions are committed.
func (c *controller) note(object, reason, format string, a ...any) {
	c.pendingEvents = append(c.pendingEvents, &v1.Event{Object: object, Reason: reason, Message: fmt.Sprintf(format, a...)})
}

// flushEvents records the queued events if the pass committed its
// decisions (a failed pass is repeated and queues them again); a failure to
// record is only logged, since an event is never worth failing a decision
// for.
func (c *controller) flushEvents(ctx context.Context, committed bool) {
	evs := c.pendingEvents
	c.pendingEvents = nil
	if len(evs) == 0 || c.events == nil || !committed {
		return
	}
	if err := c.events.RecordAll(ctx, evs); err != nil {
		c.log.Warn("could not record events", "err", err, "events", len(evs))
	}
}

// maxNodesInEvent bounds how many nodes a Scheduled event names.
const maxNodesInEvent = 10

// schedulingEvents turns a plan's outcome into one Scheduled and one
// FailedScheduling event per workload: "placed 3 instances: a ×2, b ×1".
func (c *controller) schedulingEvents(bound map[string]map[string]int, failed map[string]map[string]int) {
	for _, wl := range sortedKeys(bound) {
		perNode := bound[wl]
		total, parts := 0, make([]string, 0, min(len(perNode), maxNodesInEvent+1))
		for i, n := range sortedKeys(perNode) {
			total += perNode[n]
			if i < maxNodesInEvent {
				parts = append(parts, fmt.Sprintf("%s ×%d", n, perNode[n]))
			}
		}
		if len(perNode) > maxNodesInEvent {
			parts = append(parts, fmt.Sprintf("and %d more nodes", len(perNode)-maxNodesInEvent))
		}
		c.note(events.Workload(wl), "Scheduled", "placed %d instance%s: %s", total, plural(total), strings.Join(parts, ", "))
	}
	for _, wl := range sortedKeys(failed) {
		for _, reason := range sortedKeys(failed[wl]) {
			n := failed[wl][reason]
			c.note(events.Workload(wl), "FailedScheduling", "%d instance%s pending: %s", n, plural(n), reason)
		}
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
