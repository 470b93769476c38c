// Package scale is the scale benchmark of issue 17 (`make bench-scale`):
// one `wasmorch server` process driven, as a user would, by hollow nodes
// in separate `wasmorch simulate` processes and a client over the gRPC
// API, at growing numbers of instances. It prints a Markdown table of
// what one change costs at each scale point, with ratios against the
// smallest point of the same run.
//
// It runs only with WASMORCH_BENCH_SCALE=1, for tens of minutes:
//
//	WASMORCH_BENCH_SCALE=1 go test ./e2e/scale -run '^$' -bench Scale -benchtime 1x -timeout 90m -v
//
// WASMORCH_SCALE_POINTS (default 10000,50000,200000) and
// WASMORCH_SCALE_NODES (default 1000) choose the scale; see settings.
package scale

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

var (
	binary    string // the wasmorch binary under test; "" when the benchmark is off
	repoRoot  string
	testStart = time.Now() // the test's -timeout counts from about here
)

// testTimeout is the test binary's -timeout (0: none).
func testTimeout() time.Duration {
	f := flag.Lookup("test.timeout")
	if f == nil {
		return 0
	}
	d, _ := f.Value.(flag.Getter).Get().(time.Duration)
	return d
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

// runMain builds the binary only when the benchmark is to run, so that
// `go test ./...` passes through this package at no cost.
func runMain(m *testing.M) int {
	if os.Getenv("WASMORCH_BENCH_SCALE") != "1" {
		return m.Run()
	}
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "wasmorch-scale-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "wasmorch")
	build := exec.Command("go", "build", "-o", binary, "./cmd/wasmorch")
	build.Dir = repoRoot
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building wasmorch: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// settings are the benchmark's knobs, from WASMORCH_SCALE_* variables.
type settings struct {
	points       []int         // WASMORCH_SCALE_POINTS: instances in the cluster at each point, ascending
	nodes        int           // WASMORCH_SCALE_NODES: hollow nodes of the main simulator
	workloadSize int           // WASMORCH_SCALE_WORKLOAD: replicas of each workload that populates the cluster
	trials       int           // WASMORCH_SCALE_TRIALS: 1-replica applies per point
	reads        int           // WASMORCH_SCALE_READS: calls per read measured
	burst        int           // WASMORCH_SCALE_BURST: replicas of the throughput workload (at most the point)
	loss         int           // WASMORCH_SCALE_LOSS: instances on the node that is killed
	populate     time.Duration // WASMORCH_SCALE_POPULATE_TIMEOUT: how long a point may take to populate
	stall        time.Duration // WASMORCH_SCALE_STALL: how long population may make no progress
}

func settingsFromEnv() (settings, error) {
	s := settings{
		points: []int{10000, 50000, 200000}, nodes: 1000, workloadSize: 1000,
		trials: 20, reads: 200, burst: 10000, loss: 200, populate: 10 * time.Minute, stall: 2 * time.Minute,
	}
	if v := os.Getenv("WASMORCH_SCALE_POINTS"); v != "" {
		s.points = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 || len(s.points) > 0 && n <= s.points[len(s.points)-1] {
				return s, fmt.Errorf("WASMORCH_SCALE_POINTS=%q: want ascending positive counts, e.g. 10000,50000", v)
			}
			s.points = append(s.points, n)
		}
	}
	for _, knob := range []struct {
		name string
		dst  *int
	}{
		{"WASMORCH_SCALE_NODES", &s.nodes}, {"WASMORCH_SCALE_WORKLOAD", &s.workloadSize},
		{"WASMORCH_SCALE_TRIALS", &s.trials}, {"WASMORCH_SCALE_READS", &s.reads},
		{"WASMORCH_SCALE_BURST", &s.burst}, {"WASMORCH_SCALE_LOSS", &s.loss},
	} {
		if v := os.Getenv(knob.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return s, fmt.Errorf("%s=%q: want a positive count", knob.name, v)
			}
			*knob.dst = n
		}
	}
	for _, knob := range []struct {
		name string
		dst  *time.Duration
	}{{"WASMORCH_SCALE_POPULATE_TIMEOUT", &s.populate}, {"WASMORCH_SCALE_STALL", &s.stall}} {
		if v := os.Getenv(knob.name); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil || d <= 0 {
				return s, fmt.Errorf("%s=%q: want a duration, e.g. 10m", knob.name, v)
			}
			*knob.dst = d
		}
	}
	return s, nil
}

// slotsPerNode is the instance slots each main hollow node registers:
// room for the largest point, its probes and its throughput workload,
// with a quarter to spare, and never below Kubernetes' 110.
func (s settings) slotsPerNode() int {
	last := s.points[len(s.points)-1]
	most := last + min(s.burst, last) + s.trials*len(s.points) + s.loss*len(s.points)
	return max(110, (most*5/4+s.nodes-1)/s.nodes)
}
