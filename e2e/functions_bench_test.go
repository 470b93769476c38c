package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// The function benchmarks across processes: one `wasmorch server` (the
// gateway) and one `wasmorch agent` (the worker and its function server)
// in separate processes at default settings, the gateway reaching the
// function server over mutual TLS on loopback, as in a real deployment.
// The clients and the native baseline run in this process. Set
// WASMORCH_BENCH_DEBUG_ADDR to a loopback host:port to have the server
// serve Go's profiler there during the run.

// acrossClients is how many clients send requests at once for throughput
// (TARGETS.md's native baseline uses 8).
const acrossClients = 8

// BenchmarkFunctionAcrossProcesses compares a warm request through the
// gateway to `greet` (C, a fresh sandbox per request) on a worker in
// another process with a native Go handler measured again right before:
// p50 latency of one client ("x-native-p50") and requests per second with
// 8 clients ("pct-native-rps"). The native handler runs in this process
// (as in the all-in-one benchmark) and, for the "-vs-native-process"
// ratios, in a process of its own, as the gateway does. CPU per request
// is read from /proc (utime+stime) for each process: this one (the
// clients, and the in-process native handler), the server (the gateway)
// and the agent (the worker); context switches per request too, for the
// gateway, the worker and the native process (threads' exits are not
// counted: Go keeps its threads). "relay-to-native-process" puts a
// process that only relays bytes (relay) between the clients and the
// native process: two process hops with no work, the floor of the
// gateway's path. Target (TARGETS.md): p50 ≤ 2× native, throughput ≥ 40 %
// of native.
func BenchmarkFunctionAcrossProcesses(b *testing.B) {
	fc := startFunctionCluster(b)
	fc.deployFunction(b, "greet", "/greet", nil)
	native := nativeGreeter()
	defer native.Close()
	apart := startNativeProcess(b)
	relayed := startRelayProcess(b, apart.addr)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: acrossClients}}
	defer client.CloseIdleConnections()
	procs := []int{os.Getpid(), fc.server.proc.cmd.Process.Pid, fc.agent.proc.cmd.Process.Pid, apart.proc.cmd.Process.Pid, relayed.proc.cmd.Process.Pid}
	// CPU and context switches (each a thread put to sleep or woken:
	// what a request costs on this machine beyond its work) per request
	// of each process.
	var switches []float64
	measure := func(b *testing.B, url string) (acrossResult, []time.Duration) {
		before, swBefore := cpuTimes(procs), contextSwitches(procs)
		res := measureRequests(b, client, url)
		after, swAfter := cpuTimes(procs), contextSwitches(procs)
		switches = make([]float64, len(procs))
		for i := range after {
			after[i] = (after[i] - before[i]) / time.Duration(res.requests)
			switches[i] = float64(swAfter[i]-swBefore[i]) / float64(res.requests)
		}
		return res, after
	}
	for _, tt := range []struct{ name, url string }{
		{"native-go", native.URL + "/greet?who=bench"},
		{"native-go-process", "http://" + apart.addr + "/greet?who=bench"},
		{"relay-to-native-process", "http://" + relayed.addr + "/greet?who=bench"},
		{"gateway-c", "http://" + fc.http + "/greet?who=bench"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			if tt.name == "relay-to-native-process" {
				// Two process hops and nothing else: the floor of the
				// gateway's path on this machine, against the native
				// process measured right before.
				apartBase, _ := measure(b, "http://"+apart.addr+"/greet?who=bench")
				res, cpu := measure(b, tt.url)
				b.ReportMetric(float64(res.p50.Microseconds()), "p50-µs")
				b.ReportMetric(float64(apartBase.p50.Microseconds()), "native-process-p50-µs")
				b.ReportMetric(float64(res.p50)/float64(apartBase.p50), "x-native-process-p50")
				b.ReportMetric(100*res.rps/apartBase.rps, "pct-native-process-rps")
				b.ReportMetric(float64(cpu[4].Nanoseconds())/1000, "relay-cpu-µs/req")
				b.ReportMetric(switches[4], "relay-cswitch/req")
				return
			}
			if tt.name != "gateway-c" {
				res, cpu := measure(b, tt.url)
				b.ReportMetric(float64(res.p50.Microseconds()), "p50-µs")
				b.ReportMetric(res.rps, "req/s")
				b.ReportMetric(float64((cpu[0]+cpu[3]).Nanoseconds())/1000, "cpu-µs/req")
				if tt.name == "native-go-process" {
					b.ReportMetric(switches[3], "native-process-cswitch/req")
				}
				return
			}
			// The baselines again, right before: the machine's load drifts.
			base, baseCPU := measure(b, native.URL+"/greet?who=bench")
			apartBase, _ := measure(b, "http://"+apart.addr+"/greet?who=bench")
			apartSwitches := switches[3]
			b.ResetTimer()
			res, cpu := measure(b, tt.url)
			b.ReportMetric(float64(res.p50.Microseconds()), "p50-µs")
			b.ReportMetric(res.rps, "req/s")
			b.ReportMetric(float64(base.p50.Microseconds()), "native-p50-µs")
			b.ReportMetric(base.rps, "native-req/s")
			b.ReportMetric(float64(res.p50)/float64(base.p50), "x-native-p50")
			b.ReportMetric(100*res.rps/base.rps, "pct-native-rps")
			b.ReportMetric(float64(res.p50)/float64(apartBase.p50), "x-native-process-p50")
			b.ReportMetric(100*res.rps/apartBase.rps, "pct-native-process-rps")
			b.ReportMetric(float64(baseCPU[0].Nanoseconds())/1000, "native-cpu-µs/req")
			b.ReportMetric(float64(cpu[1].Nanoseconds())/1000, "gateway-cpu-µs/req")
			b.ReportMetric(float64(cpu[2].Nanoseconds())/1000, "worker-cpu-µs/req")
			b.ReportMetric(float64(cpu[0].Nanoseconds())/1000, "client-cpu-µs/req")
			b.ReportMetric(switches[1], "gateway-cswitch/req")
			b.ReportMetric(switches[2], "worker-cswitch/req")
			b.ReportMetric(apartSwitches, "native-process-cswitch/req")
		})
	}
}

// nativeProcessEnv makes this test binary a native greeter in a process
// of its own (startNativeProcess): it serves on the address the variable
// names, and never runs the tests.
const nativeProcessEnv = "WASMORCH_E2E_NATIVE_GREETER"

// relayProcessEnv ("listen>upstream") makes this test binary a relay in
// a process of its own (startNativeProcess): the least a process between
// the clients and the native greeter can do.
const relayProcessEnv = "WASMORCH_E2E_RELAY"

func init() {
	if v := os.Getenv(relayProcessEnv); v != "" {
		listen, upstream, _ := strings.Cut(v, ">")
		fmt.Fprintln(os.Stderr, relay(listen, upstream))
		os.Exit(1)
	}
	addr := os.Getenv(nativeProcessEnv)
	if addr == "" {
		return
	}
	srv := &http.Server{Addr: addr, Handler: greetHandler(), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintln(os.Stderr, srv.ListenAndServe())
	os.Exit(1)
}

// relay passes each connection to listen on to a connection of its own to
// upstream, in lockstep on one goroutine: what one read of the client
// brings (a whole request, here) goes up, and what one read of the
// upstream brings (a whole answer, here) comes back. No parsing, no
// copies but the buffer: the floor of a process hop.
func relay(listen, upstream string) error {
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	for {
		c, err := lis.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			u, err := net.Dial("tcp", upstream)
			if err != nil {
				return
			}
			defer u.Close()
			buf := make([]byte, 64<<10)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if _, err := u.Write(buf[:n]); err != nil {
					return
				}
				if n, err = u.Read(buf); err != nil {
					return
				}
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
		}()
	}
}

// nativeProcess is the native greeter in a process of its own.
type nativeProcess struct {
	addr string
	proc *process
}

func startNativeProcess(b *testing.B) *nativeProcess {
	b.Helper()
	addr := loopbackAddr(b, "127.0.0.1")
	return startHelperProcess(b, addr, nativeProcessEnv+"="+addr)
}

// startRelayProcess starts a relay (relay) to upstream in a process of
// its own.
func startRelayProcess(b *testing.B, upstream string) *nativeProcess {
	b.Helper()
	addr := loopbackAddr(b, "127.0.0.1")
	return startHelperProcess(b, addr, relayProcessEnv+"="+addr+">"+upstream)
}

// startHelperProcess runs this test binary with env set, serving at addr.
func startHelperProcess(b *testing.B, addr, env string) *nativeProcess {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), env)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	benchWait(b, "the native greeter answering", func() bool {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return true
	})
	return &nativeProcess{addr: addr, proc: p}
}

// cpuTimes reads the CPU time (user and system) each process has used.
func cpuTimes(pids []int) []time.Duration {
	out := make([]time.Duration, len(pids))
	for i, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The fields after the command's name, which is in parentheses.
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 13 {
			continue
		}
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		out[i] = time.Duration(utime+stime) * time.Second / clockTicks
	}
	return out
}

// contextSwitches reads how many times each process's threads were
// switched out (voluntary and not), summed over its threads.
func contextSwitches(pids []int) []int64 {
	out := make([]int64, len(pids))
	for i, pid := range pids {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		for _, task := range tasks {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, task.Name()))
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					out[i] += n
				} else if v, ok := strings.CutPrefix(line, "nonvoluntary_ctxt_switches:"); ok {
					n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
					out[i] += n
				}
			}
		}
	}
	return out
}

// clockTicks is the unit of /proc/PID/stat's times (USER_HZ, 100 on
// Linux).
const clockTicks = 100

// BenchmarkFunctionColdStartAcrossProcesses measures the first response
// of a function scaled to zero (its worker kept the stopped replica's
// compiled function), with the gateway and the worker in separate
// processes, beside a native handler's response in the same iterations.
// Target (TARGETS.md): p50 ≤ 5 ms.
func BenchmarkFunctionColdStartAcrossProcesses(b *testing.B) {
	fc := startFunctionCluster(b)
	fc.deployFunction(b, "lazy", "/lazy", func(s *v1.WorkloadSpec) {
		s.Autoscale = &v1.Autoscale{MinReplicas: 0, MaxReplicas: 1, IdleMs: time.Hour.Milliseconds()}
	})
	native := nativeGreeter()
	defer native.Close()
	var cold, base []time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		fc.scaleToZero(b, "lazy")
		t0 := time.Now()
		getOK(b, http.DefaultClient, native.URL+"/greet")
		base = append(base, time.Since(t0))
		b.StartTimer()
		t0 = time.Now()
		getOK(b, http.DefaultClient, "http://"+fc.http+"/lazy?who=cold")
		cold = append(cold, time.Since(t0))
	}
	b.StopTimer()
	slices.Sort(cold)
	slices.Sort(base)
	b.ReportMetric(float64(cold[len(cold)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(base[len(base)/2].Microseconds()), "native-p50-µs")
}

// functionCluster is one `wasmorch server` and one `wasmorch agent`.
type functionCluster struct {
	http          string
	control       v1.ControlClient
	server, agent *daemon
}

func startFunctionCluster(b *testing.B) *functionCluster {
	b.Helper()
	env := benchEnv(b)
	api, httpAddr := loopbackAddr(b, "127.0.0.1"), loopbackAddr(b, "127.0.0.1")
	dataDir := b.TempDir()
	args := []string{"server", "--data-dir", dataDir, "--api", api, "--http", httpAddr, "--metrics-addr", "127.0.0.1:0", "--name", "cp"}
	if addr := os.Getenv("WASMORCH_BENCH_DEBUG_ADDR"); addr != "" {
		args = append(args, "--debug-addr", addr)
	}
	server := startDaemon(b, "server", env, args...)
	conn, err := grpc.NewClient(api, grpc.WithTransportCredentials(adminCreds(b, dataDir)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	fc := &functionCluster{http: httpAddr, control: v1.NewControlClient(conn), server: server}
	token := joinTokenWhenUp(b, env, api)
	fc.agent = startDaemon(b, "agent", env, "agent", "--server", api, "--token", token, "--name", "fn1", "--data-dir", b.TempDir(), "--listen", loopbackAddr(b, "127.0.0.1"))
	benchWait(b, "the node Ready", func() bool { return readyNodes(context.Background(), fc.control) == 1 })
	return fc
}

// deployFunction uploads testdata/greet.wasm and deploys it as function
// name at route, then waits until the gateway answers there with 200.
func (fc *functionCluster) deployFunction(b *testing.B, name, route string, edit func(*v1.WorkloadSpec)) {
	b.Helper()
	ctx := context.Background()
	wasm, err := os.ReadFile(filepath.Join(repoRoot, "testdata", "greet.wasm"))
	if err != nil {
		b.Fatal(err)
	}
	digest := blobs.Digest(wasm)
	up, err := fc.control.UploadBlob(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if err := up.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Header{Header: &v1.UploadHeader{Digest: digest, Size: int64(len(wasm))}}}); err != nil {
		b.Fatal(err)
	}
	if err := up.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Chunk{Chunk: wasm}}); err != nil && !errors.Is(err, io.EOF) {
		b.Fatal(err)
	}
	if _, err := up.CloseAndRecv(); err != nil {
		b.Fatal(err)
	}
	spec := &v1.WorkloadSpec{Kind: "wasm", ModuleDigest: digest, Replicas: 1, Http: &v1.HttpTrigger{Route: route}}
	if edit != nil {
		edit(spec)
	}
	if _, err := fc.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: name, Spec: spec}); err != nil {
		b.Fatal(err)
	}
	benchWait(b, name+" answering at "+route, func() bool {
		resp, err := http.Get("http://" + fc.http + route)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// scaleToZero scales a function to zero and waits until it has no
// instance, no load that could wake it, and the gateway knows.
func (fc *functionCluster) scaleToZero(b *testing.B, name string) {
	b.Helper()
	ctx := context.Background()
	for attempt := 0; ; attempt++ {
		// The previous request's replica first: let its wake-up land.
		benchWait(b, name+" settled", func() bool {
			wl, err := fc.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: name})
			return err == nil && wl.GetInFlight() == 0 && wl.GetReady() == wl.GetWorkload().GetSpec().GetReplicas()
		})
		if _, err := fc.control.ScaleWorkload(ctx, &v1.ScaleRequest{Name: name, Replicas: 0}); err != nil {
			b.Fatal(err)
		}
		benchWait(b, name+" at zero", func() bool {
			l, err := fc.control.ListInstances(ctx, &v1.ListInstancesRequest{Workload: name})
			return err == nil && len(l.GetInstances()) == 0
		})
		// The gateway's load reports settle within two report periods;
		// the route table follows the removal within milliseconds.
		time.Sleep(2500 * time.Millisecond)
		wl, err := fc.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: name})
		if err != nil {
			b.Fatal(err)
		}
		if wl.GetWorkload().GetSpec().GetReplicas() == 0 && wl.GetTotal() == 0 {
			return
		}
		if attempt == 5 {
			b.Fatalf("%s does not stay at zero: %v", name, wl)
		}
	}
}

// nativeGreeter is the baseline: what greet answers, in Go.
func nativeGreeter() *httptest.Server { return httptest.NewServer(greetHandler()) }

func greetHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "hi, %s!\n", r.URL.Query().Get("who"))
	})
}

type acrossResult struct {
	p50      time.Duration
	rps      float64
	requests int // sent in all, warm-up included
}

// measureRequests measures max(b.N, 200) sequential requests (for p50),
// then as many from acrossClients clients (for throughput).
func measureRequests(b *testing.B, client *http.Client, url string) acrossResult {
	b.Helper()
	n := max(b.N, 200)
	for range 20 {
		getOK(b, client, url) // warm the connections and caches
	}
	lat := make([]time.Duration, n)
	for i := range n {
		t0 := time.Now()
		getOK(b, client, url)
		lat[i] = time.Since(t0)
	}
	slices.Sort(lat)
	began := time.Now()
	var wg sync.WaitGroup
	per := max(n/acrossClients, 50)
	for range acrossClients {
		wg.Go(func() {
			for range per {
				getOK(b, client, url)
			}
		})
	}
	wg.Wait()
	return acrossResult{p50: lat[n/2], rps: float64(per*acrossClients) / time.Since(began).Seconds(), requests: 20 + n + per*acrossClients}
}

// getOK sends a GET and reads the whole answer, which must be a 200.
func getOK(b *testing.B, client *http.Client, url string) {
	resp, err := client.Get(url)
	if err != nil {
		b.Error(err)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Errorf("%s: %s", url, resp.Status)
	}
}
