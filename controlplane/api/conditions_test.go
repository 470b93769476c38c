package api

import (
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/controlplane/events"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestHeartbeatsKeepTheNodesConditions: the conditions a worker reports
// in its heartbeats are kept in its node's record, written only when they
// change, each beginning and end an event of the node.
func TestHeartbeatsKeepTheNodesConditions(t *testing.T) {
	w := newSessionWorld(t)
	beat := func(conds ...*v1.NodeCondition) {
		t.Helper()
		if _, err := w.api.Heartbeat(w.ctx, &v1.HeartbeatRequest{Node: "n1", Conditions: conds}); err != nil {
			t.Fatal(err)
		}
		if err := w.s.cache.Sync(w.ctx); err != nil {
			t.Fatal(err)
		}
	}
	record := func() (*v1.Node, int64) {
		t.Helper()
		n, err := w.s.store.Nodes.Get(w.ctx, "n1")
		if err != nil {
			t.Fatal(err)
		}
		return n.Value, n.ModRevision
	}
	pressure := &v1.NodeCondition{Type: v1.NodeConditionType_NODE_CONDITION_TYPE_DISK_PRESSURE,
		Message: "the disk holding /w has 1 MiB free of 1 GiB, below the 512 MiB the worker keeps free", SinceUnixNano: 42}

	beat()
	_, rev := record()
	beat(pressure)
	n, pressed := record()
	if len(n.GetConditions()) != 1 || n.GetConditions()[0].GetMessage() != pressure.GetMessage() || pressed == rev {
		t.Fatalf("after a heartbeat with DiskPressure the node holds %v", n.GetConditions())
	}
	for range 3 {
		beat(pressure)
	}
	if _, again := record(); again != pressed {
		t.Fatal("heartbeats repeating the same condition rewrote the node's record")
	}
	beat()
	if n, _ := record(); len(n.GetConditions()) != 0 {
		t.Fatalf("after a heartbeat without conditions the node holds %v", n.GetConditions())
	}

	evs, err := w.s.events.List(w.ctx, events.Node("n1"))
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range evs {
		reasons = append(reasons, e.GetReason())
		if e.GetReason() == "NodeHasDiskPressure" && !strings.Contains(e.GetMessage(), pressure.GetMessage()) {
			t.Errorf("NodeHasDiskPressure says %q, want the worker's message", e.GetMessage())
		}
	}
	if got := strings.Join(reasons, ","); got != "NodeHasDiskPressure,NodeHasNoDiskPressure" {
		t.Errorf("node events %s, want NodeHasDiskPressure,NodeHasNoDiskPressure", got)
	}
}

// What a worker reports is bounded before it is stored: a node's record is
// read by every scheduling pass, so a worker cannot make it large with a
// long message or many conditions.
func TestReportedConditionsAreBounded(t *testing.T) {
	w := newSessionWorld(t)
	pressure := func(msg string) *v1.NodeCondition {
		return &v1.NodeCondition{Type: v1.NodeConditionType_NODE_CONDITION_TYPE_DISK_PRESSURE, Message: msg, SinceUnixNano: 7}
	}
	long := strings.Repeat("é", 5000) // 10,000 bytes
	req := &v1.HeartbeatRequest{Node: "n1", Conditions: []*v1.NodeCondition{
		{Type: v1.NodeConditionType(99), Message: "from a newer worker"},
		{Type: v1.NodeConditionType_NODE_CONDITION_TYPE_UNSPECIFIED},
		pressure(long),
		pressure("again"),
	}}
	if _, err := w.api.Heartbeat(w.ctx, req); err != nil {
		t.Fatal(err)
	}
	n, err := w.s.store.Nodes.Get(w.ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	conds := n.Value.GetConditions()
	if len(conds) != 1 || conds[0].GetType() != v1.NodeConditionType_NODE_CONDITION_TYPE_DISK_PRESSURE {
		t.Fatalf("the node holds %v, want the one DiskPressure", conds)
	}
	if msg := conds[0].GetMessage(); len(msg) > maxConditionMessage || !strings.HasPrefix(long, msg) || len(msg) < maxConditionMessage-1 {
		t.Fatalf("stored message of %d bytes, want the first %d bytes of it, cut at a character", len(msg), maxConditionMessage)
	}
	if len(req.GetConditions()[2].GetMessage()) != len(long) {
		t.Fatal("the request was modified")
	}
}
