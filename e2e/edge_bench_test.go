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
	"syscall"
	"testing"
	"time"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// BenchmarkAgentMemory measures the slim wasmorch-agent and `wasmorch
// agent`, each joined alone to a `wasmorch server`, as an operator reads
// them: the VmRSS of the running process (the median of 10 readings over
// 5 s, after 5 s settled; never after a forced GC), idle with no
// instance, then with N idle instances (sleep.wasm; 100, or
// $WASMORCH_EDGE_INSTANCES) Running. It reports the size of the slim
// binary as make release builds it for this machine too. Run it once:
// -benchtime 1x.
func BenchmarkAgentMemory(b *testing.B) {
	n := 100
	if s := os.Getenv("WASMORCH_EDGE_INSTANCES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("WASMORCH_EDGE_INSTANCES=%q is not a positive number", s)
		}
	}
	slim := slimAgent(b, runtime.GOARCH, "")
	if fi, err := os.Stat(slim); err == nil {
		b.ReportMetric(float64(fi.Size())/1e6, "slim-binary-MB")
	}
	bc := startBenchCluster(b, nil)
	token := joinTokenWhenUp(b, bc.env, bc.api)
	ctx := context.Background()
	for _, variant := range []struct {
		name, bin string
		args      []string
	}{
		{"slim", slim, nil},
		{"full", "", []string{"agent"}},
	} {
		node := "mem-" + variant.name
		args := append(slices.Clone(variant.args), "--server", bc.api, "--token", token, "--name", node, "--data-dir", b.TempDir(), "--listen", loopbackAddr(b, "127.0.0.1"))
		d := startBinary(b, "agent-"+node, bc.env, variant.bin, nil, args...)
		benchWait(b, node+" Ready", func() bool { return nodeReady(ctx, bc.control, node) })
		idle := steadyRSS(b, d.proc.cmd.Process.Pid)

		workload := "sleep-" + variant.name
		if r := run(b, bc.env, "deploy", "testdata/sleep.wasm", "--name", workload, "--replicas", strconv.Itoa(n), "--no-wait", "--server", bc.api); r.code != 0 {
			b.Fatal(r)
		}
		benchWait(b, fmt.Sprintf("%d instances Running on %s", n, node), func() bool { return runningOn(ctx, bc.control, workload)[node] == n })
		loaded := steadyRSS(b, d.proc.cmd.Process.Pid)
		b.ReportMetric(float64(idle)/(1<<20), variant.name+"-idle-MiB")
		b.ReportMetric(float64(loaded)/(1<<20), fmt.Sprintf("%s-%d-instances-MiB", variant.name, n))
		b.ReportMetric(float64(loaded-idle)/float64(n)/(1<<10), variant.name+"-KiB/instance")

		if r := run(b, bc.env, "delete", workload, "--server", bc.api); r.code != 0 {
			b.Fatal(r)
		}
		d.stop(syscall.SIGTERM)
	}
}

// nodeReady says whether the control plane sees node Ready.
func nodeReady(ctx context.Context, c v1.ControlClient, node string) bool {
	l, err := c.ListNodes(ctx, &v1.ListNodesRequest{})
	if err != nil {
		return false
	}
	for _, nv := range l.GetNodes() {
		if nv.GetNode().GetName() == node {
			return nv.GetReady()
		}
	}
	return false
}

// steadyRSS is the median VmRSS of process pid over 10 readings 500 ms
// apart, after 5 s settled: what the process holds, never forced to
// collect or to return memory to the OS.
func steadyRSS(b *testing.B, pid int) int64 {
	b.Helper()
	time.Sleep(5 * time.Second)
	var readings []int64
	for range 10 {
		rss, err := vmRSS(pid)
		if err != nil {
			b.Fatal(err)
		}
		readings = append(readings, rss)
		time.Sleep(500 * time.Millisecond)
	}
	slices.Sort(readings)
	return readings[len(readings)/2]
}

// vmRSS reads VmRSS from /proc/PID/status.
func vmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}
