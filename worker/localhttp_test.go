package worker

import (
	"encoding/hex"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

func fnRec(id, route, host string) *pb.Instance {
	r := rec(id, 0)
	r.Spec.Http = &pb.HttpTrigger{Route: route, Host: host}
	return r
}

// TestLocalRoutesMatchAsTheGatewayDoes: a route for the request's host
// before a route for any host, the longest prefix first; the replicas of
// a route take turns; a route goes with its last replica; commands have
// no route.
func TestLocalRoutesMatchAsTheGatewayDoes(t *testing.T) {
	var lr localRoutes
	lr.add(fnRec("any-1", "/api", ""))
	lr.add(fnRec("any-2", "/api/", ""))
	lr.add(fnRec("long", "/api/v2", ""))
	lr.add(fnRec("hosted", "/api", "site.example"))
	lr.add(rec("command", 0))

	for _, c := range []struct{ host, path, route string }{
		{"127.0.0.1:8080", "/api/x", "/api"},
		{"127.0.0.1:8080", "/api", "/api"},
		{"127.0.0.1:8080", "/api/v2/y", "/api/v2"},
		{"SITE.example:8080", "/api/v2/y", "/api"},
		{"127.0.0.1:8080", "/apix", ""},
		{"127.0.0.1:8080", "/", ""},
	} {
		m, ok := lr.match(c.host, c.path)
		if ok != (c.route != "") || ok && m.settings.Route != c.route {
			t.Errorf("%s%s matched %q (%v, %v), want %q", c.host, c.path, m.settings.Route, m.ids, ok, c.route)
		}
	}
	m1, _ := lr.match("", "/api")
	m2, _ := lr.match("", "/api")
	first, second := m1.ids, m2.ids
	if !slices.Equal(slices.Sorted(slices.Values(first)), []string{"any-1", "any-2"}) || first[0] == second[0] {
		t.Fatalf("the replicas of /api in two requests: %v then %v, want both, taking turns", first, second)
	}

	lr.remove(fnRec("any-1", "/api", ""))
	if m, _ := lr.match("", "/api"); !slices.Equal(m.ids, []string{"any-2"}) {
		t.Fatalf("/api after one replica left: %v", m.ids)
	}
	lr.remove(fnRec("any-2", "/api", ""))
	if m, ok := lr.match("", "/api/x"); ok {
		t.Fatalf("/api/x matched %s %v after the route's last replica left", m.settings.Route, m.ids)
	}
}

// The local function listener gives each request an id of its own, as the
// gateway does (on the answer, replacing a client's), and counts the
// requests in the local function metrics by workload, route, generation
// and status; with a real wasm function (greet.wasm) behind it.
func TestLocalListenerGivesRequestIDsAndMetrics(t *testing.T) {
	module, digest := readTestdata(t, "greet.wasm")
	rt := newWasmRuntime(t)
	reg := prometheus.NewRegistry()
	e := startEnv(t, envOptions{
		cp: func(cp *fakeCP) { cp.blobs[digest] = module },
		config: func(c *Config) {
			c.Runtimes, c.Registry, c.LocalHTTPAddr = []runtimeapi.Runtime{rt}, reg, "127.0.0.1:0"
		},
	})
	fn := &pb.Instance{Id: "greet-1", Workload: "greet", Generation: 3, Node: "node-a",
		Spec: &pb.WorkloadSpec{Kind: "wasm", ModuleDigest: digest, Http: &pb.HttpTrigger{Route: "/greet"}}}
	e.cp.setDesired(fn)
	e.waitState("greet-1", pb.InstanceState_INSTANCE_STATE_RUNNING, "")
	base := "http://" + e.w.LocalHTTPAddr()

	get := func(path string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, base+path, nil)
		req.Header.Set(HeaderRequestID, "chosen-by-the-client")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	isID := func(s string) bool { _, err := hex.DecodeString(s); return len(s) == 16 && err == nil }

	var ids []string
	for range 2 {
		resp, body := get("/greet?who=site")
		if resp.StatusCode != http.StatusOK || body != "hello, site!\n" {
			t.Fatalf("GET /greet: %d %q", resp.StatusCode, body)
		}
		id := resp.Header.Get(HeaderRequestID)
		if !isID(id) {
			t.Fatalf("request id %q: want the listener's own, 16 hex digits", id)
		}
		ids = append(ids, id)
	}
	if ids[0] == ids[1] {
		t.Errorf("two requests got the same id %s", ids[0])
	}
	resp, body := get("/nowhere")
	if id := resp.Header.Get(HeaderRequestID); resp.StatusCode != http.StatusNotFound || !isID(id) || !strings.Contains(body, "(request id "+id+")") {
		t.Errorf("GET /nowhere: %d, id %q, body %q: want 404 naming its id", resp.StatusCode, id, body)
	}

	if got := localMetric(t, reg, "wasmorch_local_function_requests_total", "workload=greet", "route=/greet", "generation=3", "code=200"); got != 2 {
		t.Errorf("wasmorch_local_function_requests_total{greet,/greet,3,200} = %v, want 2", got)
	}
	if got := localMetric(t, reg, "wasmorch_local_function_requests_in_flight", "workload=greet", "route=/greet"); got != 0 {
		t.Errorf("in flight after the answers: %v", got)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range families {
		if strings.HasPrefix(f.GetName(), "wasmorch_local_function_") {
			names = append(names, f.GetName())
		}
	}
	if want := []string{"wasmorch_local_function_request_duration_seconds", "wasmorch_local_function_requests_in_flight", "wasmorch_local_function_requests_total"}; !slices.Equal(names, want) {
		t.Errorf("registered %v, want %v", names, want)
	}
}

// localMetric is the value of the counter or gauge name whose labels are
// labels (name=value, any order); -1 if there is none.
func localMetric(t *testing.T, reg *prometheus.Registry, name string, labels ...string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			var got []string
			for _, l := range m.GetLabel() {
				got = append(got, l.GetName()+"="+l.GetValue())
			}
			if slices.Equal(slices.Sorted(slices.Values(got)), slices.Sorted(slices.Values(labels))) {
				if c := m.GetCounter(); c != nil {
					return c.GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}
