package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/internal/agentcmd"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// BenchmarkAgentMemory measures the slim wasmorch-agent and `wasmorch
// agent`, joined side by side to one `wasmorch server`, as an operator
// reads them: the VmRSS of each running process (the median of 10
// readings over 5 s; never after a forced GC), idle with no instance,
// then with N idle instances (sleep.wasm; 100, or
// $WASMORCH_EDGE_INSTANCES) Running on each (placed there by a node
// label). It reports the size of the slim binary as make release builds
// it for this machine too. The readings come 5 s after the agents are
// Ready (and after the instances are Running), or at each of the
// durations of $WASMORCH_EDGE_SETTLE (comma-separated, e.g. "15s,5m,10m":
// what the GC lets pile up, and whether the process is still growing),
// reported as MiB-at-DURATION, the last also without the suffix. With
// $WASMORCH_EDGE_BASELINE naming another wasmorch-agent binary (one built
// from an earlier commit), it measures that one too, in the same run and
// at the same times, as "base". Run it once: -benchtime 1x.
func BenchmarkAgentMemory(b *testing.B) {
	n := 100
	if s := os.Getenv("WASMORCH_EDGE_INSTANCES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("WASMORCH_EDGE_INSTANCES=%q is not a positive number", s)
		}
	}
	settles := []time.Duration{5 * time.Second}
	if s := os.Getenv("WASMORCH_EDGE_SETTLE"); s != "" {
		settles = nil
		for _, f := range strings.Split(s, ",") {
			d, err := time.ParseDuration(strings.TrimSpace(f))
			if err != nil || d < 0 || (len(settles) > 0 && d <= settles[len(settles)-1]) {
				b.Fatalf("WASMORCH_EDGE_SETTLE=%q is not a list of increasing durations", s)
			}
			settles = append(settles, d)
		}
	}
	slim := slimAgent(b, runtime.GOARCH, "")
	if fi, err := os.Stat(slim); err == nil {
		b.ReportMetric(float64(fi.Size())/1e6, "slim-binary-MB")
	}
	type agent struct {
		name, bin string
		args      []string
		pid       int
	}
	variants := []*agent{{name: "slim", bin: slim}}
	if base := os.Getenv("WASMORCH_EDGE_BASELINE"); base != "" {
		fi, err := os.Stat(base)
		if err != nil {
			b.Fatalf("WASMORCH_EDGE_BASELINE: %v", err)
		}
		b.ReportMetric(float64(fi.Size())/1e6, "base-binary-MB")
		variants = append(variants, &agent{name: "base", bin: base})
	}
	variants = append(variants, &agent{name: "full", args: []string{"agent"}})
	bc := startBenchCluster(b, nil)
	token := joinTokenWhenUp(b, bc.env, bc.api)
	ctx := context.Background()
	var daemons []*daemon
	for _, v := range variants {
		node := "mem-" + v.name
		args := append(slices.Clone(v.args), "--server", bc.api, "--token", token, "--name", node, "--data-dir", b.TempDir(), "--listen", loopbackAddr(b, "127.0.0.1"))
		d := startBinary(b, "agent-"+node, bc.env, v.bin, nil, args...)
		daemons = append(daemons, d)
		v.pid = d.proc.cmd.Process.Pid
	}
	for _, v := range variants {
		node := "mem-" + v.name
		benchWait(b, node+" Ready", func() bool { return nodeReady(ctx, bc.control, node) })
		if r := run(b, bc.env, "node", "label", node, "edge-bench="+v.name, "--server", bc.api); r.code != 0 {
			b.Fatal(r)
		}
	}
	pids := make([]int, len(variants))
	for i, v := range variants {
		pids[i] = v.pid
	}
	report := func(what string, readings [][]int64) {
		for i, v := range variants {
			for j, d := range settles {
				if len(settles) > 1 {
					b.ReportMetric(float64(readings[j][i])/(1<<20), fmt.Sprintf("%s-%s-MiB-at-%v", v.name, what, d))
				}
			}
			b.ReportMetric(float64(readings[len(settles)-1][i])/(1<<20), v.name+"-"+what+"-MiB")
		}
	}
	idle := steadyRSSAt(b, pids, settles)
	report("idle", idle)

	for _, v := range variants {
		if r := run(b, bc.env, "deploy", "testdata/sleep.wasm", "--name", "sleep-"+v.name, "--replicas", strconv.Itoa(n), "--selector", "edge-bench="+v.name, "--no-wait", "--server", bc.api); r.code != 0 {
			b.Fatal(r)
		}
	}
	for _, v := range variants {
		node, workload := "mem-"+v.name, "sleep-"+v.name
		benchWait(b, fmt.Sprintf("%d instances Running on %s", n, node), func() bool { return runningOn(ctx, bc.control, workload)[node] == n })
	}
	loaded := steadyRSSAt(b, pids, settles)
	report(fmt.Sprintf("%d-instances", n), loaded)
	last := len(settles) - 1
	for i, v := range variants {
		b.ReportMetric(float64(loaded[last][i]-idle[last][i])/float64(n)/(1<<10), v.name+"-KiB/instance")
	}
	for _, v := range variants {
		if r := run(b, bc.env, "delete", "sleep-"+v.name, "--server", bc.api); r.code != 0 {
			b.Fatal(r)
		}
	}
	for _, d := range daemons {
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
// apart, after settle: what the process holds, never forced to collect or
// to return memory to the OS.
func steadyRSS(b *testing.B, pid int, settle time.Duration) int64 {
	b.Helper()
	return steadyRSSAt(b, []int{pid}, []time.Duration{settle})[0][0]
}

// steadyRSSAt reads the processes pids as steadyRSS does, side by side (a
// reading of each every 500 ms), at each of the times settles (increasing)
// after now: readings[j][i] is pids[i] at settles[j].
func steadyRSSAt(b *testing.B, pids []int, settles []time.Duration) [][]int64 {
	b.Helper()
	start := time.Now()
	out := make([][]int64, len(settles))
	for j, settle := range settles {
		time.Sleep(time.Until(start.Add(settle)))
		readings := make([][]int64, len(pids))
		for range 10 {
			for i, pid := range pids {
				rss, err := vmRSS(pid)
				if err != nil {
					b.Fatal(err)
				}
				readings[i] = append(readings[i], rss)
			}
			time.Sleep(500 * time.Millisecond)
		}
		out[j] = make([]int64, len(pids))
		for i, r := range readings {
			slices.Sort(r)
			out[j][i] = r[len(r)/2]
		}
	}
	return out
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

// BenchmarkAgentUnderMemoryCgroup runs the slim wasmorch-agent as a
// constrained device would: in a memory cgroup of its own limited to 64
// MiB ($WASMORCH_EDGE_CGROUP), joined to a `wasmorch server` outside it,
// with N idle instances (sleep.wasm; 200, or $WASMORCH_EDGE_INSTANCES)
// Running on it. It reports the cgroup's peak and steady usage (which
// counts the page cache of the agent's files as well as its memory), the
// agent's VmRSS, and how often the cgroup hit its limit. Needs root and
// cgroup v1 or v2 with the memory controller. Run it once: -benchtime 1x.
func BenchmarkAgentUnderMemoryCgroup(b *testing.B) {
	n := 200
	if s := os.Getenv("WASMORCH_EDGE_INSTANCES"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("WASMORCH_EDGE_INSTANCES=%q is not a positive number", s)
		}
	}
	limit := int64(64 << 20)
	if s := os.Getenv("WASMORCH_EDGE_CGROUP"); s != "" {
		var err error
		if limit, err = agentcmd.ParseCapacity(s); err != nil {
			b.Fatalf("WASMORCH_EDGE_CGROUP: %v", err)
		}
	}
	cg := newMemoryCgroup(b, limit)
	bc := startBenchCluster(b, nil)
	token := joinTokenWhenUp(b, bc.env, bc.api)
	ctx := context.Background()
	// The shell moves itself into the cgroup, then becomes the agent.
	wrap := []string{"sh", "-c", `echo $$ > "` + cg.procs + `" && exec "$0" "$@"`}
	args := []string{"--server", bc.api, "--token", token, "--name", "tiny", "--data-dir", b.TempDir(), "--listen", loopbackAddr(b, "127.0.0.1")}
	d := startBinary(b, "agent-tiny", bc.env, slimAgent(b, runtime.GOARCH, ""), wrap, args...)
	benchWait(b, "tiny Ready", func() bool { return nodeReady(ctx, bc.control, "tiny") })
	idle := steadyRSS(b, d.proc.cmd.Process.Pid, 5*time.Second)
	idleUsage := cg.read(b, cg.usage)

	if r := run(b, bc.env, "deploy", "testdata/sleep.wasm", "--name", "tiny-sleep", "--replicas", strconv.Itoa(n), "--memory", "1Mi", "--no-wait", "--server", bc.api); r.code != 0 {
		b.Fatal(r)
	}
	benchWait(b, fmt.Sprintf("%d instances Running on tiny", n), func() bool { return runningOn(ctx, bc.control, "tiny-sleep")["tiny"] == n })
	loaded := steadyRSS(b, d.proc.cmd.Process.Pid, 5*time.Second)
	if !d.running() {
		b.Fatalf("the agent exited (killed at the cgroup's limit?) with %d", d.proc.exitCode)
	}
	b.ReportMetric(float64(limit)/(1<<20), "cgroup-limit-MiB")
	b.ReportMetric(float64(idle)/(1<<20), "idle-RSS-MiB")
	b.ReportMetric(float64(idleUsage)/(1<<20), "idle-cgroup-MiB")
	b.ReportMetric(float64(loaded)/(1<<20), fmt.Sprintf("%d-instances-RSS-MiB", n))
	b.ReportMetric(float64(cg.read(b, cg.usage))/(1<<20), fmt.Sprintf("%d-instances-cgroup-MiB", n))
	b.ReportMetric(float64(cg.read(b, cg.peak))/(1<<20), "cgroup-peak-MiB")
	b.ReportMetric(float64(cg.read(b, cg.failures)), "limit-hits")
}

// memoryCgroup is a memory cgroup made for one benchmark, under the one
// the test process is in: the files to read and the one to join.
type memoryCgroup struct {
	procs, usage, peak, failures string
}

func newMemoryCgroup(b *testing.B, limit int64) *memoryCgroup {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("a memory cgroup needs root")
	}
	own, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		b.Skip(err)
	}
	name := fmt.Sprintf("wasmorch-edge-%d", os.Getpid())
	var dir string
	var cg memoryCgroup
	var limitFile string
	for _, line := range strings.Split(string(own), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case slices.Contains(strings.Split(parts[1], ","), "memory"): // v1
			dir = filepath.Join("/sys/fs/cgroup/memory", parts[2], name)
			limitFile = "memory.limit_in_bytes"
			cg = memoryCgroup{usage: "memory.usage_in_bytes", peak: "memory.max_usage_in_bytes", failures: "memory.failcnt"}
		case parts[0] == "0" && parts[1] == "" && dir == "": // v2, unless v1 has memory
			if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
				dir = filepath.Join("/sys/fs/cgroup", parts[2], name)
				limitFile = "memory.max"
				cg = memoryCgroup{usage: "memory.current", peak: "memory.peak", failures: "memory.events"}
			}
		}
	}
	if dir == "" {
		b.Skip("no memory cgroup controller here")
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Skipf("cannot make a memory cgroup: %v", err)
	}
	b.Cleanup(func() { _ = os.Remove(dir) })
	if err := os.WriteFile(filepath.Join(dir, limitFile), []byte(strconv.FormatInt(limit, 10)), 0o644); err != nil {
		b.Fatalf("limiting the cgroup: %v", err)
	}
	cg.procs = filepath.Join(dir, "cgroup.procs")
	cg.usage, cg.peak, cg.failures = filepath.Join(dir, cg.usage), filepath.Join(dir, cg.peak), filepath.Join(dir, cg.failures)
	return &cg
}

// read reads a number from a cgroup file (memory.events: its max count).
func (cg *memoryCgroup) read(b *testing.B, file string) int64 {
	b.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		b.Fatal(err)
	}
	s := strings.TrimSpace(string(raw))
	if file == cg.failures { // v2's memory.events is "low N\nhigh N\nmax N\n..."
		for _, line := range strings.Split(s, "\n") {
			if v, ok := strings.CutPrefix(line, "max "); ok {
				s = v
			}
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		b.Fatalf("%s: %v", file, err)
	}
	return v
}
