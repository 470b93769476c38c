// Package e2e tests wasmorch end to end: TestMain builds the binary once,
// and each test runs it as a user would, as separate processes (`up` in
// the background, client commands beside it) with its own data directory
// and free loopback ports.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Bounds of the polling loops. They are there so that a broken build ends
// instead of hanging; nothing is asserted about how fast anything is.
const (
	pollInterval = 100 * time.Millisecond
	maxPolls     = 600
	// stopGrace is how long a stopped `up` may take before it is killed
	// (and the test fails: a shutdown that hangs is a bug).
	stopGrace = 60 * time.Second
	// commandLimit kills a client command that hangs.
	commandLimit = 3 * time.Minute
)

var (
	binary   string // the wasmorch binary under test
	repoRoot string // client commands run here, so testdata/x.wasm resolves
)

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	root, err := filepath.Abs("..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	repoRoot = root
	dir, err := os.MkdirTemp("", "wasmorch-e2e-")
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

// freeAddr returns a loopback address with a port nothing listens on.
//
// A port the kernel handed out for "127.0.0.1:0" and that the test then
// closed stays in the ephemeral range, where the kernel may give it again
// to any outgoing connection or :0 listener before the process meant to
// listen on it starts (seen under load: an agent failed with "address
// already in use"). The ports come instead from below the ephemeral range
// (/proc/sys/net/ipv4/ip_local_port_range starts at 32768), each handed
// out once per test process, starting at a random offset so that two test
// processes rarely walk the same ports; the listen check skips any port
// something else holds.
func freeAddr(t *testing.T) string {
	t.Helper()
	return freeAddrOn(t, "127.0.0.1")
}

// freeAddrOn is freeAddr on another local address (a loopback one other
// than 127.0.0.1, say); ports are handed out once each across addresses.
func freeAddrOn(t testing.TB, ip string) string {
	t.Helper()
	for range freePortHigh - freePortLow {
		port := freePortLow + int(nextFreePort.Add(1))%(freePortHigh-freePortLow)
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		lis, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		if err := lis.Close(); err != nil {
			t.Fatal(err)
		}
		return addr
	}
	t.Fatalf("no free port on %s in %d-%d", ip, freePortLow, freePortHigh)
	return ""
}

// The ports freeAddr hands out, below Linux's default ephemeral range.
const freePortLow, freePortHigh = 20000, 32000

var nextFreePort = func() *atomic.Int64 {
	var n atomic.Int64
	n.Store(rand.Int64N(freePortHigh - freePortLow))
	return &n
}()

// cliEnv is the environment commands run with: the test's, without any
// WASMORCH_ setting, with a config home of the test's own so that a
// developer's config file cannot leak in, plus extra.
func cliEnv(t testing.TB, extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "WASMORCH_") && !strings.HasPrefix(kv, "XDG_CONFIG_HOME=") {
			env = append(env, kv)
		}
	}
	env = append(env, "XDG_CONFIG_HOME="+t.TempDir())
	return append(env, extra...)
}

// result is how a command ended.
type result struct {
	args           []string
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("wasmorch %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// run runs the binary to completion.
func run(t testing.TB, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = repoRoot
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	if exitErr, ok := err.(*exec.ExitError); ok {
		r.code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatalf("running wasmorch %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// cluster is one `wasmorch up` process.
type cluster struct {
	t                  *testing.T
	dataDir, api, http string
	metrics            string // the member's metrics listener
	env                []string
	log                string // where up's stdout and stderr go
	proc               *process
}

// process is the running `up`; exitCode is set before done is closed.
type process struct {
	cmd      *exec.Cmd
	done     chan struct{}
	exitCode int
}

// startUp starts `wasmorch up` on a fresh data directory and free ports
// and waits until its node is Ready.
func startUp(t *testing.T) *cluster {
	t.Helper()
	return startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t))
}

// startUpAt starts `wasmorch up` on the given data directory and
// addresses (to restart a cluster where it was) and waits until its node
// is Ready. The process is stopped when the test ends. extra are more
// flags for up.
func startUpAt(t *testing.T, dataDir, api, http string, extra ...string) *cluster {
	t.Helper()
	c := &cluster{t: t, dataDir: dataDir, api: api, http: http, metrics: freeAddr(t), env: cliEnv(t)}
	logFile, err := os.CreateTemp(t.TempDir(), "up-*.log")
	if err != nil {
		t.Fatal(err)
	}
	c.log = logFile.Name()
	cmd := exec.Command(binary, append([]string{"up", "--data-dir", dataDir, "--api", api, "--http", http, "--metrics-addr", c.metrics, "--node-name", "e2e-node"}, extra...)...)
	cmd.Dir = repoRoot
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	_ = logFile.Close() // The child has its own descriptor.
	p := &process{cmd: cmd, done: make(chan struct{})}
	c.proc = p
	go func() {
		_ = cmd.Wait()
		p.exitCode = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		if c.running() {
			c.stop(syscall.SIGTERM)
		}
		if t.Failed() {
			out, _ := os.ReadFile(c.log)
			t.Logf("wasmorch up (data dir %s) printed:\n%s", dataDir, out)
		}
	})
	c.waitReady()
	return c
}

func (c *cluster) running() bool {
	select {
	case <-c.proc.done:
		return false
	default:
		return true
	}
}

// waitReady polls `get nodes -o json` until a node is Ready.
func (c *cluster) waitReady() {
	c.t.Helper()
	var last result
	for range maxPolls {
		if !c.running() {
			out, _ := os.ReadFile(c.log)
			c.t.Fatalf("wasmorch up exited with %d before it was ready:\n%s", c.proc.exitCode, out)
		}
		last = c.run("get", "nodes", "-o", "json")
		if last.code == 0 {
			var nodes []nodeJSON
			if err := json.Unmarshal([]byte(last.stdout), &nodes); err != nil {
				c.t.Fatalf("get nodes -o json is not a JSON array of nodes: %v\n%s", err, last)
			}
			for _, n := range nodes {
				if n.State == "Ready" {
					return
				}
			}
		}
		time.Sleep(pollInterval)
	}
	c.t.Fatalf("no node became Ready; last: %s", last)
}

// stop sends sig and waits for the process to exit, returning its exit
// code (-1 when a signal ended it).
func (c *cluster) stop(sig syscall.Signal) int {
	c.t.Helper()
	if err := c.proc.cmd.Process.Signal(sig); err != nil && c.running() {
		c.t.Fatalf("signalling up: %v", err)
	}
	select {
	case <-c.proc.done:
	case <-time.After(stopGrace):
		_ = c.proc.cmd.Process.Kill()
		<-c.proc.done
		c.t.Errorf("wasmorch up did not exit after %v; killed it", sig)
	}
	return c.proc.exitCode
}

// with is the cluster as seen from a subtest, so that failures are
// reported by (and stop) the subtest.
func (c *cluster) with(t *testing.T) *cluster {
	cc := *c
	cc.t = t
	return &cc
}

// run runs a client command against this cluster: --server goes before
// any "--", after which arguments belong to the module.
func (c *cluster) run(args ...string) result {
	c.t.Helper()
	i := slices.Index(args, "--")
	if i < 0 {
		i = len(args)
	}
	full := slices.Concat(args[:i], []string{"--server", c.api}, args[i:])
	return run(c.t, c.env, full...)
}

// mustRun runs a client command that must succeed.
func (c *cluster) mustRun(args ...string) result {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("%s", r)
	}
	return r
}

// The objects of `get ... -o json` as the CLI contract describes them.
type (
	workloadJSON struct {
		Name       string `json:"name"`
		Replicas   int    `json:"replicas"`
		Ready      int    `json:"ready"`
		Generation int64  `json:"generation"`
		// rollouts
		Canary             string `json:"canary"`
		PromotedGeneration int64  `json:"promotedGeneration"`
	}
	instanceJSON struct {
		ID         string `json:"id"`
		Workload   string `json:"workload"`
		Generation int64  `json:"generation"`
		Node       string `json:"node"`
		State      string `json:"state"`
		Restarts   int    `json:"restarts"`
		ExitCode   *int   `json:"exitCode"`
	}
	nodeJSON struct {
		Name  string `json:"name"`
		State string `json:"state"`
	}
)

// getJSON runs `get <kind> -o json` and decodes the array into out.
func (c *cluster) getJSON(out any, args ...string) {
	c.t.Helper()
	r := c.mustRun(append([]string{"get"}, append(args, "-o", "json")...)...)
	if err := json.Unmarshal([]byte(r.stdout), out); err != nil {
		c.t.Fatalf("not a JSON array: %v\n%s", err, r)
	}
}

func (c *cluster) workloads() []workloadJSON {
	var ws []workloadJSON
	c.getJSON(&ws, "workloads")
	return ws
}

func (c *cluster) instances(workload string) []instanceJSON {
	var is []instanceJSON
	if workload == "" {
		c.getJSON(&is, "instances")
	} else {
		c.getJSON(&is, "instances", "--workload", workload)
	}
	return is
}

// eventually polls cond until it holds; cond returns a description of
// what it saw, for the failure message.
func eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	var seen string
	for range maxPolls {
		var ok bool
		if ok, seen = cond(); ok {
			return
		}
		time.Sleep(pollInterval)
	}
	t.Fatalf("%s: never happened; last seen: %s", what, seen)
}

// oneLineError checks that a command failed and that stderr is exactly
// one line, "error: <what>; <what to do>", containing want.
func oneLineError(t *testing.T, r result, want string) {
	t.Helper()
	if strings.Count(r.stderr, "\n") > 1 {
		t.Errorf("want a single line on stderr\n%s", r)
	}
	errorLine(t, r, want)
}

// errorLine checks that a command failed and that the last line of stderr,
// and no other, is "error: <what>; <what to do>" containing want. Lines
// before it may show progress (deploy's wait, on a non-terminal).
func errorLine(t *testing.T, r result, want string) {
	t.Helper()
	if r.code == 0 {
		t.Errorf("exit 0, want non-zero\n%s", r)
		return
	}
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	errors := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "error: ") {
			errors++
		}
	}
	if errors != 1 || !strings.HasPrefix(last, "error: ") || !strings.Contains(last, want) || !strings.Contains(last, "; ") {
		t.Errorf("want stderr to end with one line 'error: ...%s...; <what to do>'\n%s", want, r)
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
