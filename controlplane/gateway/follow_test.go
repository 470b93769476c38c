package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/store"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestOneChangeRebuildsOnlyItsRoute: a pass after one change reads the
// instances of the function it touches, not those of the cluster, keeps
// every other route as it was and the touched route's replicas with their
// in-flight counts; a change to a workload that is not a function, or to
// a node that changes no route, publishes no table.
func TestOneChangeRebuildsOnlyItsRoute(t *testing.T) {
	k := newCluster(t)
	for n := range 5 {
		k.node(fmt.Sprintf("n%d", n), fmt.Sprintf("127.0.0.1:%d", 1000+n))
	}
	const functions, per = 30, 10
	for i := range functions {
		wl := function(fmt.Sprintf("fn-%02d", i), fmt.Sprintf("/fn-%02d", i), "")
		k.queue(store.WorkloadsPrefix+wl.Name, wl)
		for j := range per {
			k.replica(wl, fmt.Sprintf("%s-%02d", wl.Name, j), fmt.Sprintf("n%d", j%5))
		}
	}
	batch := &v1.Workload{Name: "batch", Generation: 1, Spec: &v1.WorkloadSpec{Replicas: 200}}
	k.queue(store.WorkloadsPrefix+"batch", batch)
	for j := range 200 {
		k.replica(batch, fmt.Sprintf("batch-%03d", j), fmt.Sprintf("n%d", j%5))
	}
	k.flush()
	k.sync()
	f := k.follow()

	prev := f.full()
	if len(prev.routes) != functions || f.b.stats.routes != functions || f.b.stats.instances != functions*per {
		t.Fatalf("full pass: %d routes; built %d routes from %d instances, want %d from %d", len(prev.routes), f.b.stats.routes, f.b.stats.instances, functions, functions*per)
	}
	r7 := prev.byName("fn-07")
	r7.replicas[0].inFlight.Add(3)

	// One replica of fn-07 fails its health check.
	before := f.b.stats
	tb := f.pass(k.put(store.StatusPrefix+"fn-07-03", &v1.InstanceStatus{Id: "fn-07-03", Node: "n3", State: v1.InstanceState_INSTANCE_STATE_RUNNING, Unhealthy: true}))
	if d := f.b.stats.minus(before); d.routes != 1 || d.instances != per || d.nodes != 0 {
		t.Errorf("one instance's change rebuilt %d routes from %d instances and %d nodes, want 1 route from %d instances", d.routes, d.instances, d.nodes, per)
	}
	for _, r := range prev.routes {
		if r.workload != "fn-07" && tb.byName(r.workload) != r {
			t.Errorf("route %s was rebuilt by a change to fn-07", r.workload)
		}
	}
	got := tb.byName("fn-07")
	if len(got.replicas) != per-1 || slices.ContainsFunc(got.replicas, func(r *replica) bool { return r.instance == "fn-07-03" }) {
		t.Fatalf("fn-07's replicas after fn-07-03 became unhealthy: %v", instancesOf(got))
	}
	for _, rep := range got.replicas {
		if !slices.Contains(r7.replicas, rep) {
			t.Errorf("replica %s is a new one: its in-flight count was lost", rep.instance)
		}
	}
	if got.replicas[0].inFlight.Load() != 3 {
		t.Errorf("in-flight count of %s: %d, want 3", got.replicas[0].instance, got.replicas[0].inFlight.Load())
	}

	// A change to a workload that is not a function.
	before, prev = f.b.stats, tb
	tb = f.pass(k.put(store.StatusPrefix+"batch-007", &v1.InstanceStatus{Id: "batch-007", Node: "n2", State: v1.InstanceState_INSTANCE_STATE_FAILED}))
	if d := f.b.stats.minus(before); tb != prev || d.routes != 0 || d.instances != 0 {
		t.Errorf("a change to a workload with no route: new table %v, %d routes rebuilt from %d instances", tb != prev, d.routes, d.instances)
	}

	// Cordoning a node changes no replica (only cold targets, which these
	// functions have none of).
	before, prev = f.b.stats, tb
	tb = f.pass(k.put(store.NodesPrefix+"n1", &v1.Node{Name: "n1", HttpAddress: "127.0.0.1:1001", Runtimes: []string{"wasm"}, Cordoned: true}))
	if d := f.b.stats.minus(before); tb != prev || d.nodes != 5 {
		t.Errorf("cordoning n1: new table %v after reading %d nodes, want the same table after reading 5", tb != prev, d.nodes)
	}
}

func (s buildStats) minus(o buildStats) buildStats {
	return buildStats{passes: s.passes - o.passes, routes: s.routes - o.routes, instances: s.instances - o.instances, nodes: s.nodes - o.nodes}
}

func instancesOf(r *route) []string {
	var out []string
	for _, rep := range r.replicas {
		out = append(out, rep.instance)
	}
	return out
}

func nodesOf(ts []*target) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.node)
	}
	return out
}

// TestGatewayFollowsTheCache runs a gateway over a member's cache and
// changes the cluster under it as the API, controllers and workers do: it
// routes what becomes routable, stops routing what no longer is, keeps the
// replicas (and their in-flight counts) that stay, and answers requests
// from the table it holds.
func TestGatewayFollowsTheCache(t *testing.T) {
	k := newCluster(t)
	lease1 := k.node("n1", "127.0.0.1:1001")
	k.node("n2", "127.0.0.1:1002")
	g := New(Config{Store: k.st, Cache: k.c, Member: "m1"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	<-g.Ready()
	routeOf := func(path string) *route { return g.table.Load().match("gw", path) }
	answer := func(path string) (int, string) {
		w := httptest.NewRecorder()
		g.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://gw"+path, nil))
		return w.Code, strings.TrimSpace(w.Body.String())
	}

	greet := function("greet", "/greet", "")
	k.put(store.WorkloadsPrefix+"greet", greet)
	k.replica(greet, "greet-a", "n1")
	k.flush()
	eventually(t, "greet-a routed at /greet", func() bool {
		r := routeOf("/greet")
		return r != nil && slices.Equal(instancesOf(r), []string{"greet-a"}) && r.replicas[0].addr == "127.0.0.1:1001"
	})
	r0 := routeOf("/greet")
	r0.replicas[0].inFlight.Add(3)

	other := function("other", "/other", "")
	k.put(store.WorkloadsPrefix+"other", other)
	k.replica(other, "other-a", "n2")
	k.flush()
	eventually(t, "other routed", func() bool { r := routeOf("/other"); return r != nil && len(r.replicas) == 1 })
	if routeOf("/greet") != r0 {
		t.Errorf("greet's route was rebuilt by changes to other")
	}

	k.replica(greet, "greet-b", "n2")
	k.flush()
	eventually(t, "greet-b routed beside greet-a", func() bool {
		return slices.Equal(instancesOf(routeOf("/greet")), []string{"greet-a", "greet-b"})
	})
	if a := routeOf("/greet").replicas[0]; a != r0.replicas[0] || a.inFlight.Load() != 3 {
		t.Errorf("greet-a lost its identity or in-flight count (%d) when greet-b came", a.inFlight.Load())
	}

	k.put(store.StatusPrefix+"greet-b", &v1.InstanceStatus{Id: "greet-b", Node: "n2", State: v1.InstanceState_INSTANCE_STATE_RUNNING, Unhealthy: true})
	eventually(t, "unhealthy greet-b out of the route", func() bool {
		return slices.Equal(instancesOf(routeOf("/greet")), []string{"greet-a"})
	})

	// A function that can start cold: every node that can take it, then
	// not the cordoned one.
	cold := function("cold", "/cold", "")
	cold.Spec.ModuleDigest, cold.Spec.Autoscale = "sha256:aa", &v1.Autoscale{MaxReplicas: 2}
	k.put(store.WorkloadsPrefix+"cold", cold)
	eventually(t, "cold targets n1 n2", func() bool {
		r := routeOf("/cold")
		return r != nil && slices.Equal(nodesOf(r.coldTargets), []string{"n1", "n2"})
	})
	k.put(store.NodesPrefix+"n2", &v1.Node{Name: "n2", HttpAddress: "127.0.0.1:1002", Runtimes: []string{"wasm"}, Cordoned: true})
	eventually(t, "cordoned n2 no cold target", func() bool {
		return slices.Equal(nodesOf(routeOf("/cold").coldTargets), []string{"n1"})
	})

	// The worker of n2 runs in this process.
	g.ServeLocally("n2", http.NotFoundHandler())
	eventually(t, "other-a called in this process", func() bool { return routeOf("/other").replicas[0].local != nil })

	// n1 moves its function server, then stops heartbeating.
	k.put(store.NodesPrefix+"n1", &v1.Node{Name: "n1", HttpAddress: "127.0.0.1:2001", Runtimes: []string{"wasm"}})
	eventually(t, "greet-a at n1's new address", func() bool {
		r := routeOf("/greet")
		return len(r.replicas) == 1 && r.replicas[0].addr == "127.0.0.1:2001"
	})
	if _, err := k.cli.Revoke(context.Background(), lease1); err != nil {
		t.Fatal(err)
	}
	eventually(t, "no replica of greet once n1 is not alive", func() bool { return len(routeOf("/greet").replicas) == 0 })
	if code, body := answer("/greet"); code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "503 service unavailable: the function is not available; retry shortly (request id ") {
		t.Errorf("GET /greet with no replica: %d %q", code, body)
	}
	if r := routeOf("/cold"); len(r.coldTargets) != 0 {
		t.Errorf("cold targets with n1 dead and n2 cordoned: %v", nodesOf(r.coldTargets))
	}

	// greet moves to another route, then is deleted.
	moved := proto.Clone(greet).(*v1.Workload)
	moved.Spec.Http.Route = "/hello"
	k.put(store.WorkloadsPrefix+"greet", moved)
	eventually(t, "greet at /hello only", func() bool {
		r := routeOf("/hello")
		return r != nil && r.workload == "greet" && routeOf("/greet") == nil
	})
	k.del(store.WorkloadsPrefix + "greet")
	eventually(t, "greet gone", func() bool { return routeOf("/hello") == nil && g.table.Load().byName("greet") == nil })
	if code, body := answer("/hello"); code != http.StatusNotFound || !strings.HasPrefix(body, "404 not found: no function is routed here (request id ") {
		t.Errorf("GET /hello after greet was deleted: %d %q", code, body)
	}
	if r := routeOf("/other"); r == nil || len(r.replicas) != 1 {
		t.Errorf("other after greet's deletion: %v", r)
	}
}

// TestCheckRouteIn: the route check over the cache refuses a route (or
// host and route) another workload holds and the reserved paths, with the
// errors users see, and accepts the rest.
func TestCheckRouteIn(t *testing.T) {
	k := newCluster(t)
	k.put(store.WorkloadsPrefix+"greet", function("greet", "/greet", ""))
	k.put(store.WorkloadsPrefix+"api", function("api", "/v1", "API.example.com"))
	k.put(store.WorkloadsPrefix+"plain", &v1.Workload{Name: "plain", Spec: &v1.WorkloadSpec{}})
	k.sync()
	for _, tc := range []struct {
		name string
		trig *v1.HttpTrigger
		err  string
	}{
		{"other", nil, ""},
		{"other", &v1.HttpTrigger{Route: "/healthz"}, "HTTP route /healthz would shadow the control plane's /healthz: choose another route"},
		{"other", &v1.HttpTrigger{Route: "/"}, "HTTP route / would shadow the control plane's /healthz: choose another route"},
		{"other", &v1.HttpTrigger{Route: "/greet"}, "HTTP route /greet is already served by workload greet: choose another --route or --host, or delete greet first"},
		{"other", &v1.HttpTrigger{Route: "/greet/"}, "HTTP route /greet is already served by workload greet: choose another --route or --host, or delete greet first"},
		{"greet", &v1.HttpTrigger{Route: "/greet"}, ""},
		{"other", &v1.HttpTrigger{Route: "/greet", Host: "a.example"}, ""},
		{"other", &v1.HttpTrigger{Route: "/v1", Host: "api.EXAMPLE.com"}, "HTTP route api.example.com/v1 is already served by workload api: choose another --route or --host, or delete api first"},
		{"other", &v1.HttpTrigger{Route: "/v1"}, ""},
		{"plain", &v1.HttpTrigger{Route: "/plain"}, ""},
	} {
		var got error
		k.c.Read(func(r cache.Reader) { got = CheckRouteIn(r, tc.name, tc.trig) })
		if fmt.Sprint(got) != fmt.Sprint(errOrNil(tc.err)) {
			t.Errorf("%s claiming %v: %v, want %q", tc.name, tc.trig, got, tc.err)
		}
	}
}

func errOrNil(s string) error {
	if s == "" {
		return nil
	}
	return fmt.Errorf("%s", s)
}
