package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// BenchmarkNodeDensity runs N idle instances (sleep.wasm, 1 MiB limit;
// N is 10,000 or $WASMORCH_DENSITY; $WASMORCH_DENSITY_MODULE=ticker.wasm
// runs instances that log a line every 100 ms instead) on one node that
// is a process of its own, as an operator runs it, and reads that
// process's memory as an operator reads it: VmRSS (and VmPTE, the page
// tables VmRSS does not count, and Threads) from /proc/PID/status, the
// median of 10 readings over 5 s after 5 s settled, never after a forced
// GC. The per-instance figure is the growth beyond the same node with
// one instance of the module Running, measured in the same run. Nodes:
// `wasmorch up` (control plane and worker in one process), `wasmorch
// agent` and the slim wasmorch-agent, each joined alone to a `wasmorch
// server` (only the agent's process counts). $WASMORCH_DENSITY_NODES
// picks some (comma-separated: up,agent,slim). $WASMORCH_DENSITY_WINDOW
// (e.g. 5m) reads again that long after all were Running. Run it once:
// -benchtime 1x.
func BenchmarkNodeDensity(b *testing.B) {
	n := 10000
	if s := os.Getenv("WASMORCH_DENSITY"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("WASMORCH_DENSITY=%q is not a positive number", s)
		}
	}
	module := "sleep.wasm"
	if m := os.Getenv("WASMORCH_DENSITY_MODULE"); m != "" {
		module = m
	}
	var window time.Duration
	if s := os.Getenv("WASMORCH_DENSITY_WINDOW"); s != "" {
		var err error
		if window, err = time.ParseDuration(s); err != nil {
			b.Fatalf("WASMORCH_DENSITY_WINDOW: %v", err)
		}
	}
	nodes := []string{"up", "agent", "slim"}
	if s := os.Getenv("WASMORCH_DENSITY_NODES"); s != "" {
		nodes = strings.Split(s, ",")
	}
	for _, node := range nodes {
		b.Run(node, func(b *testing.B) {
			var pid int
			var control v1.ControlClient
			var env []string
			var api string
			switch node {
			case "up":
				env, api = benchEnv(b), loopbackAddr(b, "127.0.0.1")
				dataDir := b.TempDir()
				d := startDaemon(b, "up", env, "up", "--data-dir", dataDir, "--api", api, "--http", loopbackAddr(b, "127.0.0.1"),
					"--metrics-addr", "127.0.0.1:0", "--node-name", "dense")
				conn, err := grpc.NewClient(api, grpc.WithTransportCredentials(adminCreds(b, dataDir)))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { _ = conn.Close() })
				control, pid = v1.NewControlClient(conn), d.proc.cmd.Process.Pid
			case "agent", "slim":
				bc := startBenchCluster(b, nil)
				env, api, control = bc.env, bc.api, bc.control
				bin, args := "", []string{"agent"}
				if node == "slim" {
					bin, args = slimAgent(b, runtime.GOARCH, ""), nil
				}
				args = append(args, "--server", api, "--token", joinTokenWhenUp(b, env, api), "--name", "dense",
					"--data-dir", b.TempDir(), "--listen", loopbackAddr(b, "127.0.0.1"))
				pid = startBinary(b, "agent", env, bin, nil, args...).proc.cmd.Process.Pid
			default:
				b.Fatalf("WASMORCH_DENSITY_NODES: no node %q (up, agent, slim)", node)
			}
			deploy := func(name string, replicas int) {
				b.Helper()
				if r := run(b, env, "deploy", "testdata/"+module, "--name", name, "--replicas", strconv.Itoa(replicas),
					"--memory", "1Mi", "--no-wait", "--server", api); r.code != 0 {
					b.Fatal(r)
				}
				waitWorkloadReady(b, control, name, replicas)
			}
			deploy("warm", 1) // the module compiled and cached, the node's steady state with one instance
			base := readNode(b, pid)
			b.ResetTimer()
			t0 := time.Now()
			deploy("dense", n)
			b.ReportMetric(time.Since(t0).Seconds(), "s-to-all-running")
			b.StopTimer()
			settled := time.Now()
			loaded := readNode(b, pid)
			b.ReportMetric(float64(n), "instances")
			b.ReportMetric(float64(base.rss)/(1<<20), "base-RSS-MiB")
			b.ReportMetric(float64(loaded.rss-base.rss)/float64(n)/1024, "KiB-RSS/instance")
			b.ReportMetric(float64(loaded.pte-base.pte)/float64(n)/1024, "KiB-PTE/instance")
			b.ReportMetric(float64(loaded.threads), "threads")
			if window > 0 {
				time.Sleep(time.Until(settled.Add(window - 10*time.Second)))
				late := readNode(b, pid)
				b.ReportMetric(window.Seconds(), "s-window")
				b.ReportMetric(float64(late.rss-base.rss)/float64(n)/1024, "KiB-RSS-late/instance")
			}
		})
	}
}

// waitWorkloadReady waits, for at most 5 minutes (a safety net, not a
// performance assertion), until n instances of a workload are Ready.
func waitWorkloadReady(b *testing.B, c v1.ControlClient, name string, n int) {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		wl, err := c.GetWorkload(context.Background(), &v1.GetWorkloadRequest{Name: name})
		if err == nil && int(wl.GetReady()) >= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatalf("%s: fewer than %d instances Ready after 5 minutes", name, n)
}

// nodeMemory is what /proc/PID/status says of a node's process.
type nodeMemory struct {
	rss, pte int64 // bytes
	threads  int64
}

// readNode takes the median of 10 readings of /proc/PID/status 500 ms
// apart, after 5 s settled (as steadyRSS).
func readNode(b *testing.B, pid int) nodeMemory {
	b.Helper()
	time.Sleep(5 * time.Second)
	var rs, ps, ts []int64
	for range 10 {
		st, err := procStatus(pid)
		if err != nil {
			b.Fatal(err)
		}
		rs, ps, ts = append(rs, st["VmRSS"]<<10), append(ps, st["VmPTE"]<<10), append(ts, st["Threads"])
		time.Sleep(500 * time.Millisecond)
	}
	return nodeMemory{rss: medianOf(rs), pte: medianOf(ps), threads: medianOf(ts)}
}

func medianOf(v []int64) int64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// procStatus reads the numeric fields of /proc/PID/status (kB dropped).
func procStatus(pid int) (map[string]int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]int64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		if n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64); err == nil {
			out[k] = n
		}
	}
	return out, sc.Err()
}
