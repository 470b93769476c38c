package worker

import (
	"context"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// TestLocalRoutesHoldColdFunctions: a local function has a route of its
// own, matched among the replicas' routes by the gateway's order, kept
// when a replica of another route leaves and dropped with the function;
// a full set replaces them all.
func TestLocalRoutesHoldColdFunctions(t *testing.T) {
	lr := localRoutes{cold: map[string]*localRoute{}}
	fn := func(name, route string, gen int64) *pb.LocalFunction {
		return &pb.LocalFunction{Workload: name, Generation: gen, Spec: &pb.WorkloadSpec{ModuleDigest: "sha256:" + name, Http: &pb.HttpTrigger{Route: route}}}
	}
	lr.add(fnRec("api-1", "/api", ""))
	lr.setCold(fn("v2", "/api/v2", 1))
	lr.setCold(fn("api", "/api", 4)) // beside its replica
	m, ok := lr.match("", "/api/v2/x")
	if !ok || m.settings.Route != "/api/v2" || len(m.ids) != 0 || m.cold == nil || m.cold.key != "v2/1" {
		t.Fatalf("/api/v2/x matched %q ids %v cold %+v, want v2's cold function alone", m.settings.Route, m.ids, m.cold)
	}
	if m, _ := lr.match("", "/api/x"); !slices.Equal(m.ids, []string{"api-1"}) || m.cold == nil || m.cold.key != "api/4" {
		t.Fatalf("/api/x: ids %v cold %+v, want the replica, then api/4 cold", m.ids, m.cold)
	}
	lr.remove(fnRec("api-1", "/api", ""))
	if m, ok := lr.match("", "/api/x"); !ok || len(m.ids) != 0 || m.cold == nil {
		t.Fatalf("/api/x after its replica left: %v %v %+v, want its cold function", ok, m.ids, m.cold)
	}
	lr.setCold(fn("v2", "/api/v2", 2)) // a new generation
	if m, _ := lr.match("", "/api/v2"); m.cold.key != "v2/2" {
		t.Fatalf("/api/v2 after a new generation: %s", m.cold.key)
	}
	lr.dropCold("api")
	if m, ok := lr.match("", "/api/x"); ok {
		t.Fatalf("/api/x matched %q after its function left", m.settings.Route)
	}
	lr.replaceCold([]*pb.LocalFunction{fn("other", "/other", 1)})
	if _, ok := lr.match("", "/api/v2"); ok {
		t.Fatal("/api/v2 still matched after a full set without it")
	}
	if m, ok := lr.match("", "/other"); !ok || m.cold.workload != "other" {
		t.Fatal("/other not matched after a full set with it")
	}
}

// localGet requests path of the worker's local listener.
func localGet(t *testing.T, w *Worker, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + w.LocalHTTPAddr() + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestLocalFunctionStartsColdAndOutlivesARestartCutOff: a worker with a
// local listener registers so; a function of its local set, of which no
// replica runs here, is answered by a cold start (its module fetched
// naming the function), and kept on disk; an agent restarted while the
// control plane is out of reach answers it again from the set it kept;
// when the control plane returns and the function has left the set, the
// path is unknown (404). A real wasm function (greet.wasm).
func TestLocalFunctionStartsColdAndOutlivesARestartCutOff(t *testing.T) {
	module, digest := readTestdata(t, "greet.wasm")
	newRT := func() runtimeapi.Runtime { return newWasmRuntime(t) }
	dir := t.TempDir()
	config := func(c *Config) {
		c.DataDir, c.Runtimes, c.LocalHTTPAddr = dir, []runtimeapi.Runtime{newRT()}, "127.0.0.1:0"
	}
	first := startEnv(t, envOptions{cp: func(cp *fakeCP) { cp.blobs[digest] = module }, config: config,
		worker: func(w *Worker) { w.persist.interval = 0 }})
	eventually(t, "a registration", func() bool { return len(first.cp.registrations()) > 0 })
	if !first.cp.registrations()[0].GetLocalHttp() {
		t.Fatal("a worker with a local listener registered without saying so")
	}
	greet := &pb.LocalFunction{Workload: "greet", Generation: 2, Spec: &pb.WorkloadSpec{Kind: "wasm", ModuleDigest: digest, ModuleSize: int64(len(module)),
		Http: &pb.HttpTrigger{Route: "/greet"}, Autoscale: &pb.Autoscale{MaxReplicas: 2}}}
	first.cp.setLocal(greet)
	// Fetched when told of it, before any request.
	eventually(t, "greet's module fetched into the module cache", func() bool { return first.w.modules.Usage().Modules == 1 })
	eventually(t, "greet answered cold", func() bool {
		code, body := localGet(t, first.w, "/greet?who=site")
		return code == http.StatusOK && body == "hello, site!\n"
	})
	first.w.mu.Lock()
	n := len(first.w.instances)
	first.w.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d instances run: the function was served by one, not cold", n)
	}
	first.cp.mu.Lock()
	fetchedFor := slices.Clone(first.cp.fetchedFor)
	first.cp.mu.Unlock()
	if !slices.Contains(fetchedFor, "greet") {
		t.Fatalf("the module was fetched for %q, want for the local function greet", fetchedFor)
	}
	if code, _ := localGet(t, first.w, "/nowhere"); code != http.StatusNotFound {
		t.Fatalf("GET /nowhere: %d, want 404", code)
	}
	eventually(t, "the local function on disk", func() bool {
		st, err := savedOn(t, dir)
		return err == nil && len(st.set.GetLocalFunctions()) == 1 && st.set.GetLocalFunctions()[0].GetWorkload() == "greet"
	})

	first.stopCP()
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}
	cut := func(c *Config) { config(c); c.Servers = []string{first.cpAddr} } // nobody listens there now
	second := startEnv(t, envOptions{config: cut})
	eventually(t, "greet answered cold by the restarted agent, cut off", func() bool {
		code, body := localGet(t, second.w, "/greet?who=again")
		return code == http.StatusOK && body == "hello, again!\n"
	})

	first.cp.setLocal() // deleted meanwhile
	serveCP(t, first.cp, first.cpAddr)
	eventually(t, "greet gone once the control plane is back", func() bool {
		code, _ := localGet(t, second.w, "/greet?who=site")
		return code == http.StatusNotFound
	})
}

// TestLocalColdStartKeepsTheFunctionsLimits: a cold start on the local
// listener holds the function's limits: its body limit (413), and its
// memory limit from the node's memory budget (a function whose requests
// need more than the node has is answered 503, as a replica's would be).
func TestLocalColdStartKeepsTheFunctionsLimits(t *testing.T) {
	module, digest := readTestdata(t, "greet.wasm")
	rt := newWasmRuntime(t)
	e := startEnv(t, envOptions{cp: func(cp *fakeCP) { cp.blobs[digest] = module }, config: func(c *Config) {
		c.Runtimes, c.LocalHTTPAddr = []runtimeapi.Runtime{rt}, "127.0.0.1:0"
		c.MemoryBytes, c.FunctionMemoryWait = 256<<20, 10*time.Millisecond
	}})
	fn := func(name string, http *pb.HttpTrigger, memory int64) *pb.LocalFunction {
		return &pb.LocalFunction{Workload: name, Generation: 1, Spec: &pb.WorkloadSpec{Kind: "wasm", ModuleDigest: digest, ModuleSize: int64(len(module)),
			Http: http, MemoryBytes: memory, Autoscale: &pb.Autoscale{MaxReplicas: 1}}}
	}
	e.cp.setLocal(fn("small", &pb.HttpTrigger{Route: "/small", MaxBodyBytes: 8}, 16<<20), fn("big", &pb.HttpTrigger{Route: "/big"}, 1<<30))
	eventually(t, "small answered cold", func() bool {
		code, _ := localGet(t, e.w, "/small?who=site")
		return code == http.StatusOK
	})
	resp, err := http.Post("http://"+e.w.LocalHTTPAddr()+"/small", "text/plain", strings.NewReader("more than eight bytes"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("a body over the function's 8 bytes: %s, want 413", resp.Status)
	}
	if code, body := localGet(t, e.w, "/big?who=site"); code != http.StatusServiceUnavailable || strings.Contains(body, "no replica") {
		t.Fatalf("a function whose requests need 1 GiB on a node of 256 MiB: %d %q, want 503 for want of memory, not a failed start", code, body)
	}
}

// TestLocalFunctionEvictedWhileCutOff: the modules of local functions are
// bounded by the module cache like any module no instance uses; one
// evicted cannot start cold while the node is cut off (503, saying so),
// and trying evicts nothing: one held still starts.
func TestLocalFunctionEvictedWhileCutOff(t *testing.T) {
	greet, greetDigest := readTestdata(t, "greet.wasm")
	echo, echoDigest := readTestdata(t, "echo.wasm")
	hello, helloDigest := readTestdata(t, "hello.wasm")
	rt := newWasmRuntime(t)
	e := startEnv(t, envOptions{cp: func(cp *fakeCP) {
		cp.blobs[greetDigest], cp.blobs[echoDigest], cp.blobs[helloDigest] = greet, echo, hello
	}, config: func(c *Config) {
		c.Runtimes, c.LocalHTTPAddr = []runtimeapi.Runtime{rt}, "127.0.0.1:0"
		c.ModuleCacheBytes = int64(len(greet) + len(echo)) // the two functions', not a third module beside them
	}})
	fn := func(name, digest string, size int) *pb.LocalFunction {
		return &pb.LocalFunction{Workload: name, Generation: 1, Spec: &pb.WorkloadSpec{Kind: "wasm", ModuleDigest: digest, ModuleSize: int64(size),
			Http: &pb.HttpTrigger{Route: "/" + name}, Autoscale: &pb.Autoscale{MaxReplicas: 1}}}
	}
	e.cp.setLocal(fn("greet", greetDigest, len(greet)), fn("echo", echoDigest, len(echo)))
	eventually(t, "both modules fetched", func() bool { return e.w.modules.Usage().Modules == 2 })
	// Another module comes in (an instance's): the least recently used of
	// the two goes.
	if _, err := e.w.modules.Get(context.Background(), helloDigest, int64(len(hello))); err != nil {
		t.Fatal(err)
	}
	onDisk := func(digest string) bool {
		p, _ := e.w.modules.Path(digest)
		_, err := os.Stat(p)
		return err == nil
	}
	evicted, held := "/greet?who=site", "/echo"
	if onDisk(greetDigest) == onDisk(echoDigest) {
		t.Fatalf("greet on disk %v, echo on disk %v: want one evicted (%+v)", onDisk(greetDigest), onDisk(echoDigest), e.w.modules.Usage())
	}
	if onDisk(greetDigest) {
		evicted, held = held, evicted
	}
	e.stopCP()
	eventually(t, "the session gone", func() bool { return e.w.agentClient() == nil })
	if code, body := localGet(t, e.w, evicted); code != http.StatusServiceUnavailable || !strings.Contains(body, "could not start here") {
		t.Fatalf("%s, evicted, cut off: %d %q, want 503 saying it could not start", evicted, code, body)
	}
	if code, body := localGet(t, e.w, held); code != http.StatusOK {
		t.Fatalf("%s, held, cut off: %d %q, want 200", held, code, body)
	}
}
