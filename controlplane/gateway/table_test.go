package gateway

import (
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func function(name, route, host string) *v1.Workload {
	return &v1.Workload{Name: name, Generation: 1, Spec: &v1.WorkloadSpec{Http: &v1.HttpTrigger{Route: route, Host: host}}}
}

func running(id, workload, node string, spec *v1.WorkloadSpec) (*v1.Instance, *v1.InstanceStatus) {
	return &v1.Instance{Id: id, Workload: workload, Node: node, Spec: spec},
		&v1.InstanceStatus{Id: id, Node: node, State: v1.InstanceState_INSTANCE_STATE_RUNNING}
}

func TestTableMatchesHostThenLongestPrefix(t *testing.T) {
	s := snapshot{
		workloads: []*v1.Workload{
			function("root", "/", ""),
			function("api", "/api", ""),
			function("v2", "/api/v2/", ""),
			function("hosted", "/", "fn.example"),
			{Name: "plain", Spec: &v1.WorkloadSpec{}},
		},
	}
	tb := build(s, nil)
	tests := []struct{ host, path, want string }{
		{"gw:8080", "/api/v2/x", "v2"},
		{"gw:8080", "/api/v2", "v2"},
		{"gw:8080", "/api/v20", "api"},
		{"gw:8080", "/api", "api"},
		{"gw:8080", "/apis", "root"},
		{"gw", "/", "root"},
		{"FN.example:8080", "/api/v2", "hosted"},
		{"fn.example", "/x", "hosted"},
	}
	for _, tt := range tests {
		r := tb.match(tt.host, tt.path)
		if r == nil || r.workload != tt.want {
			t.Errorf("match(%q, %q) = %v, want %s", tt.host, tt.path, r, tt.want)
		}
	}
	if r := build(snapshot{workloads: []*v1.Workload{function("api", "/api", "")}}, nil).match("gw", "/other"); r != nil {
		t.Errorf("unrouted path matched %s", r.workload)
	}
}

func TestTableKeepsOnlyReadyReplicas(t *testing.T) {
	wl := function("greet", "/greet", "")
	ready, readySt := running("greet-a", "greet", "n1", wl.Spec)
	lost, lostSt := running("greet-b", "greet", "n2", wl.Spec)
	starting, startingSt := running("greet-c", "greet", "n1", wl.Spec)
	startingSt.State = v1.InstanceState_INSTANCE_STATE_STARTING
	moved, movedSt := running("greet-d", "greet", "n1", wl.Spec)
	movedSt.Node = "n2" // a report from the node it was on before
	noAddr, noAddrSt := running("greet-e", "greet", "n3", wl.Spec)
	leaving, leavingSt := running("greet-f", "greet", "n1", wl.Spec)
	leaving.TerminatingUnixNano = 1 // its node is draining it
	s := snapshot{
		workloads: []*v1.Workload{wl},
		instances: []*v1.Instance{ready, lost, starting, moved, noAddr, leaving},
		statuses: map[string]*v1.InstanceStatus{"greet-a": readySt, "greet-b": lostSt, "greet-c": startingSt, "greet-d": movedSt, "greet-e": noAddrSt,
			"greet-f": leavingSt},
		nodes: map[string]*v1.Node{
			"n1": {Name: "n1", HttpAddress: "127.0.0.1:1"},
			"n2": {Name: "n2", HttpAddress: "127.0.0.1:2"},
			"n3": {Name: "n3"},
		},
		alive: map[string]bool{"n1": true, "n3": true},
	}
	tb := build(s, nil)
	r := tb.match("gw", "/greet")
	if len(r.replicas) != 1 || r.replicas[0].instance != "greet-a" || r.replicas[0].addr != "127.0.0.1:1" {
		t.Fatalf("replicas = %+v, want only greet-a", r.replicas)
	}
	r.replicas[0].inFlight.Add(3)
	again := build(s, tb).match("gw", "/greet")
	if again.replicas[0] != r.replicas[0] || again.replicas[0].inFlight.Load() != 3 {
		t.Errorf("a rebuild lost the replica's in-flight count")
	}
}

func TestPickPrefersFewerInFlight(t *testing.T) {
	busy, idle := &replica{instance: "busy"}, &replica{instance: "idle"}
	busy.inFlight.Store(10)
	r := &route{replicas: []*replica{busy, idle}}
	for range 50 {
		if got := r.pick(nil); got != idle {
			t.Fatalf("picked %s, want idle: of two choices the one with fewer in flight", got.instance)
		}
	}
	if got := r.pick(map[*replica]bool{idle: true}); got != busy {
		t.Errorf("with idle tried, picked %v", got)
	}
	if got := r.pick(map[*replica]bool{idle: true, busy: true}); got != nil {
		t.Errorf("with every replica tried, picked %v", got)
	}
}
