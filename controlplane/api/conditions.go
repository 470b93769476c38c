package api

import (
	"context"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Node conditions are what a worker reports wrong with its node (disk
// pressure), in its heartbeats: the node's record keeps those that hold,
// the scheduler places nothing new on a node with one, and each that
// begins or ends is an event of the node.

// Bounds on what a worker may report: a node's record is read by every
// scheduling pass and every `get nodes`, so a worker (or someone holding
// its certificate) cannot make it large.
const (
	maxConditions       = 8
	maxConditionMessage = 512 // bytes
)

// cleanConditions keeps the conditions a worker reported within bounds:
// one of each known type, its message cut to maxConditionMessage bytes
// (at a character boundary). It returns a new list; req is not modified.
func cleanConditions(conds []*v1.NodeCondition) []*v1.NodeCondition {
	var out []*v1.NodeCondition
	for _, c := range conds {
		t := c.GetType()
		if _, known := v1.NodeConditionType_name[int32(t)]; !known || t == v1.NodeConditionType_NODE_CONDITION_TYPE_UNSPECIFIED ||
			conditionOf(out, t) != nil || len(out) == maxConditions {
			continue
		}
		msg := c.GetMessage()
		if len(msg) > maxConditionMessage {
			msg = strings.ToValidUTF8(msg[:maxConditionMessage], "")
		}
		out = append(out, &v1.NodeCondition{Type: t, Message: msg, SinceUnixNano: c.GetSinceUnixNano()})
	}
	return out
}

// setConditions writes the conditions into the node's record, unless it
// holds them already.
func (a *agentAPI) setConditions(ctx context.Context, name string, conds []*v1.NodeCondition) error {
	for attempt := 0; attempt < 5; attempt++ {
		cur, err := a.s.store.Nodes.Get(ctx, name)
		if err != nil {
			return err
		}
		if sameConditions(cur.Value.GetConditions(), conds) {
			return nil
		}
		n := proto.Clone(cur.Value).(*v1.Node)
		n.Conditions = conds
		if _, err := a.s.store.Nodes.Update(ctx, name, n, cur.ModRevision); errdefs.IsConflict(err) {
			continue
		} else if err != nil {
			return err
		}
		a.conditionEvents(ctx, name, cur.Value.GetConditions(), conds)
		return nil
	}
	return errdefs.Conflictf("node %s changed while its conditions were written", name)
}

// sameConditions reports whether two lists hold the same conditions,
// begun at the same times.
func sameConditions(a, b []*v1.NodeCondition) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		y := conditionOf(b, x.GetType())
		if y == nil || y.GetSinceUnixNano() != x.GetSinceUnixNano() {
			return false
		}
	}
	return true
}

func conditionOf(conds []*v1.NodeCondition, t v1.NodeConditionType) *v1.NodeCondition {
	for _, c := range conds {
		if c.GetType() == t {
			return c
		}
	}
	return nil
}

// conditionEvents records NodeHas<Condition> for each condition that
// began and NodeHasNo<Condition> for each that ended (Kubernetes' names).
func (a *agentAPI) conditionEvents(ctx context.Context, node string, before, after []*v1.NodeCondition) {
	record := func(reason, format string, args ...any) {
		if err := a.s.events.Record(ctx, events.Node(node), reason, format, args...); err != nil {
			a.s.log.Warn("could not record event", "err", err)
		}
	}
	for _, c := range after {
		if conditionOf(before, c.GetType()) == nil {
			record("NodeHas"+conditionName(c.GetType()), "node %s: %s; no new instances are placed there", node, c.GetMessage())
		}
	}
	for _, c := range before {
		if conditionOf(after, c.GetType()) == nil {
			record("NodeHasNo"+conditionName(c.GetType()), "node %s: %s is over", node, conditionName(c.GetType()))
		}
	}
}

// conditionName is a condition type's CamelCase name: DiskPressure.
func conditionName(t v1.NodeConditionType) string {
	var b strings.Builder
	for _, w := range strings.Split(strings.TrimPrefix(t.String(), "NODE_CONDITION_TYPE_"), "_") {
		if w != "" {
			b.WriteString(w[:1] + strings.ToLower(w[1:]))
		}
	}
	return b.String()
}
