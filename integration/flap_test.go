package integration

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker"
)

// flakyLink is a TCP proxy between a worker and its control plane whose
// link can be cut: cut closes every connection through it and refuses
// new ones (each is closed as it arrives) until restore.
type flakyLink struct {
	lis     net.Listener
	backend string

	mu       sync.Mutex
	down     bool
	conns    map[net.Conn]struct{}
	accepted int // connections forwarded
}

func newFlakyLink(tb testing.TB, backend string) *flakyLink {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	l := &flakyLink{lis: lis, backend: backend, conns: map[net.Conn]struct{}{}}
	go l.serve()
	tb.Cleanup(func() { _ = lis.Close(); l.cut() })
	return l
}

func (l *flakyLink) addr() string { return l.lis.Addr().String() }

func (l *flakyLink) serve() {
	for {
		c, err := l.lis.Accept()
		if err != nil {
			return
		}
		l.mu.Lock()
		if l.down {
			l.mu.Unlock()
			_ = c.Close()
			continue
		}
		l.accepted++
		l.conns[c] = struct{}{}
		l.mu.Unlock()
		go l.forward(c)
	}
}

func (l *flakyLink) forward(c net.Conn) {
	b, err := net.Dial("tcp", l.backend)
	if err != nil {
		_ = c.Close()
		return
	}
	l.mu.Lock()
	if l.down {
		l.mu.Unlock()
		_ = c.Close()
		_ = b.Close()
		return
	}
	l.conns[b] = struct{}{}
	l.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(b, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, b); done <- struct{}{} }()
	<-done
	_ = c.Close()
	_ = b.Close()
	l.mu.Lock()
	delete(l.conns, c)
	delete(l.conns, b)
	l.mu.Unlock()
}

// cut closes every connection and refuses new ones until restore.
func (l *flakyLink) cut() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = true
	for c := range l.conns {
		_ = c.Close()
	}
	clear(l.conns)
}

func (l *flakyLink) restore() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.down = false
}

func (l *flakyLink) connections() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.accepted
}

// TestFlappingLinkChurnsNothing: a node on a link that drops every few
// seconds, each outage longer than the cluster's default grace (2 s) but
// within the node's own (wasmorch.io/lost-after=10s), keeps its instances:
// after six outages the same instances run, never restarted, none lost or
// replaced, and the node was never declared NotReady, though its worker
// lost its session and registered again after each one.
func TestFlappingLinkChurnsNothing(t *testing.T) {
	var link *flakyLink
	a := start(t, options{worker: func(c *worker.Config) {
		link = newFlakyLink(t, c.Servers[0])
		c.Servers = []string{link.addr()}
	}})
	ctx := context.Background()
	if _, err := a.control.LabelNode(ctx, &v1.LabelNodeRequest{Name: "it-node", Set: map[string]string{"wasmorch.io/lost-after": "10s"}}); err != nil {
		t.Fatal(err)
	}
	// The grace holds from the node's next registration: have it
	// register again, through a blip of the link.
	labelled := time.Now().UnixNano()
	link.cut()
	link.restore()
	a.waitFor(t, "the node registered again with its grace", func() (bool, string) {
		l, err := a.control.ListNodes(ctx, &v1.ListNodesRequest{})
		if err != nil || len(l.GetNodes()) != 1 {
			return false, l.String()
		}
		n := l.GetNodes()[0]
		return n.GetReady() && n.GetNode().GetRegisteredUnixNano() > labelled, l.String()
	})

	a.deploy(t, "steady", "sleep.wasm", &v1.WorkloadSpec{Replicas: 3, MemoryBytes: 1 << 20})
	before := a.waitInstances(t, "steady", 3, state(v1.InstanceState_INSTANCE_STATE_RUNNING))
	ids := map[string]bool{}
	for _, iv := range before {
		ids[iv.GetInstance().GetId()] = true
	}

	const flaps = 6
	const outage = 3 * time.Second // over the default grace of 2 s
	for i := range flaps {
		conns := link.connections()
		link.cut()
		time.Sleep(outage)
		link.restore()
		a.waitFor(t, "the worker back through the link", func() (bool, string) {
			return link.connections() > conns, "no new connection yet"
		})
		// Up a moment, as a flapping link is, then down again.
		time.Sleep(time.Second)
		if l, err := a.control.ListNodes(ctx, &v1.ListNodesRequest{}); err != nil || !l.GetNodes()[0].GetReady() {
			t.Fatalf("after outage %d the node is not Ready: %v %v", i+1, l, err)
		}
	}

	after := a.waitInstances(t, "steady", 3, state(v1.InstanceState_INSTANCE_STATE_RUNNING))
	for _, iv := range after {
		if !ids[iv.GetInstance().GetId()] {
			t.Errorf("instance %s is new: the flapping link churned the workload (before: %v)", iv.GetInstance().GetId(), describe(before))
		}
		if r := iv.GetStatus().GetRestarts(); r != 0 {
			t.Errorf("instance %s restarted %d times", iv.GetInstance().GetId(), r)
		}
	}
	evs, err := a.control.ListEvents(ctx, &v1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.GetEvents() {
		switch e.GetReason() {
		case "NodeNotReady", "InstanceLost":
			t.Errorf("event %s on %s: %s", e.GetReason(), e.GetObject(), e.GetMessage())
		}
		if e.GetReason() == "Scheduled" && !strings.Contains(e.GetMessage(), "placed 3 instances") {
			t.Errorf("a placement after the first: %s", e.GetMessage())
		}
	}
}
