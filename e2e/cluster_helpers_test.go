package e2e

import (
	"cmp"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// daemon is one long-running wasmorch process (server or agent) of a
// multi-process cluster; its output goes to a log file shown when the
// test fails.
type daemon struct {
	t    testing.TB
	name string
	args []string
	wrap []string // runs the binary through this command (ip netns exec NS)
	bin  string   // the binary; empty: wasmorch
	env  []string
	log  string
	proc *process
}

// startDaemon starts `wasmorch args...` in the background. The process is
// stopped (SIGTERM, then SIGKILL) when the test ends.
func startDaemon(t testing.TB, name string, env []string, args ...string) *daemon {
	t.Helper()
	return startWrapped(t, name, env, nil, args...)
}

// startWrapped is startDaemon with the binary run through wrap.
func startWrapped(t testing.TB, name string, env, wrap []string, args ...string) *daemon {
	t.Helper()
	return startBinary(t, name, env, "", wrap, args...)
}

// startBinary is startWrapped with another binary than wasmorch (bin not
// empty): wasmorch-agent, built for another architecture.
func startBinary(t testing.TB, name string, env []string, bin string, wrap []string, args ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, name: name, args: args, wrap: wrap, bin: bin, env: env}
	logFile, err := os.CreateTemp(t.TempDir(), name+"-*.log")
	if err != nil {
		t.Fatal(err)
	}
	d.log = logFile.Name()
	_ = logFile.Close()
	d.start()
	t.Cleanup(func() {
		if d.running() {
			d.stop(syscall.SIGTERM)
		}
		if t.Failed() {
			out, _ := os.ReadFile(d.log)
			t.Logf("%s (%s %s) printed:\n%s", d.name, filepath.Base(cmp.Or(d.bin, binary)), strings.Join(d.args, " "), out)
		}
	})
	return d
}

// start runs the process (again), appending to its log.
func (d *daemon) start() {
	d.t.Helper()
	logFile, err := os.OpenFile(d.log, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		d.t.Fatal(err)
	}
	defer logFile.Close() // The child has its own descriptor.
	bin := binary
	if d.bin != "" {
		bin = d.bin
	}
	argv := append(append(append([]string{}, d.wrap...), bin), d.args...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = repoRoot
	cmd.Env = d.env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	d.proc = p
	go func() {
		_ = cmd.Wait()
		p.exitCode = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
}

func (d *daemon) running() bool {
	select {
	case <-d.proc.done:
		return false
	default:
		return true
	}
}

// stop sends sig and waits for the process to exit.
func (d *daemon) stop(sig syscall.Signal) {
	d.t.Helper()
	if err := d.proc.cmd.Process.Signal(sig); err != nil && d.running() {
		d.t.Fatalf("signalling %s: %v", d.name, err)
	}
	select {
	case <-d.proc.done:
	case <-time.After(stopGrace):
		_ = d.proc.cmd.Process.Kill()
		<-d.proc.done
		d.t.Errorf("%s did not exit after %v; killed it", d.name, sig)
	}
}

// multi is a cluster of one `wasmorch server` and several `wasmorch
// agent` processes, each agent listening on its own loopback address.
type multi struct {
	*cluster // the client side: run, getJSON, instances ...
	server   *daemon
	agents   map[string]*daemon
	token    string // the agents' join token (joinToken)
}

// startServer starts `wasmorch server` on free ports and waits until its
// API answers.
func startServer(t *testing.T) *multi {
	t.Helper()
	return startServerOn(t, freeAddr(t))
}

// startServerOn is startServer with the API on the address given and
// extra server flags.
func startServerOn(t *testing.T, api string, extra ...string) *multi {
	t.Helper()
	http := freeAddr(t)
	env := cliEnv(t)
	m := &multi{cluster: &cluster{t: t, api: api, http: http, metrics: freeAddr(t), env: env, dataDir: t.TempDir()}, agents: map[string]*daemon{}}
	m.server = startDaemon(t, "server", env, append([]string{"server", "--data-dir", m.dataDir, "--api", api, "--http", http, "--metrics-addr", m.metrics, "--name", "cp"}, extra...)...)
	var last result
	for range maxPolls {
		if !m.server.running() {
			out, _ := os.ReadFile(m.server.log)
			t.Fatalf("wasmorch server exited with %d before it answered:\n%s", m.server.proc.exitCode, out)
		}
		if last = m.run("get", "nodes"); last.code == 0 {
			return m
		}
		time.Sleep(pollInterval)
	}
	t.Fatalf("wasmorch server never answered: %s", last)
	return nil
}

// loopbackAddr returns ip:port with a port free on that loopback address,
// handed out as freeAddr's are (below the ephemeral range, once each), so
// that a connection going out cannot take it before the server listens.
func loopbackAddr(t testing.TB, ip string) string {
	t.Helper()
	lis, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Skipf("cannot listen on %s (this test needs the whole 127.0.0.0/8 on loopback): %v", ip, err)
	}
	_ = lis.Close()
	return freeAddrOn(t, ip)
}

// startAgent starts `wasmorch agent` for node name on loopback address ip
// with labels (k=v,...; may be empty), and waits until the node is Ready.
// A node's labels come from its join token: an agent with labels joins
// with a token made for it that grants them.
func (m *multi) startAgent(name, ip, labels string) *daemon {
	m.t.Helper()
	token := m.joinToken()
	if labels != "" {
		token = joinToken(m.t, m.env, m.api, "--node", name, "--labels", labels, "--uses", "1")
	}
	args := []string{"agent", "--server", m.api, "--token", token, "--name", name, "--data-dir", m.t.TempDir(), "--listen", loopbackAddr(m.t, ip)}
	if labels != "" {
		args = append(args, "--labels", labels)
	}
	d := startDaemon(m.t, "agent-"+name, m.env, args...)
	m.agents[name] = d
	m.waitNode(name, "Ready")
	return d
}

// restartAgent starts a stopped agent again with its data dir and name.
func (m *multi) restartAgent(name string) {
	m.t.Helper()
	d := m.agents[name]
	if d.running() {
		m.t.Fatalf("agent %s is still running", name)
	}
	d.start()
	m.waitNode(name, "Ready")
}

// clusterNode is a node of `get nodes -o json`, with the fields the
// cluster tests look at.
type clusterNode struct {
	Name      string            `json:"name"`
	State     string            `json:"state"`
	Address   string            `json:"address"`
	Arch      string            `json:"arch"`
	Labels    map[string]string `json:"labels"`
	Instances int               `json:"instances"`
	Cordoned  bool              `json:"cordoned"`
	Draining  bool              `json:"draining"`
}

func (m *multi) nodes() map[string]clusterNode {
	m.t.Helper()
	var ns []clusterNode
	m.getJSON(&ns, "nodes")
	out := map[string]clusterNode{}
	for _, n := range ns {
		out[n.Name] = n
	}
	return out
}

// waitNode polls until node is in state (Ready or NotReady).
func (m *multi) waitNode(name, state string) {
	m.t.Helper()
	eventually(m.t, "node "+name+" "+state, func() (bool, string) {
		if d := m.agents[name]; d != nil && state == "Ready" && !d.running() {
			out, _ := os.ReadFile(d.log)
			m.t.Fatalf("agent %s exited with %d:\n%s", name, d.proc.exitCode, out)
		}
		ns := m.nodes()
		return ns[name].State == state, toJSON(ns)
	})
}

// instanceWithReason is an instance of `get instances -o json` with the
// reason fields.
type instanceWithReason struct {
	instanceJSON
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func (m *multi) instancesWithReasons(workload string) []instanceWithReason {
	m.t.Helper()
	var is []instanceWithReason
	m.getJSON(&is, "instances", "--workload", workload)
	return is
}

// running returns how many instances of workload are Running on each
// node, and how many it has in all.
func (m *multi) runningPerNode(workload string) (map[string]int, int) {
	m.t.Helper()
	per := map[string]int{}
	is := m.instances(workload)
	for _, in := range is {
		if in.State == "Running" {
			per[in.Node]++
		}
	}
	return per, len(is)
}

// waitSettled waits until workload has exactly n instances, all Running,
// none on the nodes in avoid, and returns how many run on each node.
func (m *multi) waitSettled(workload string, n int, avoid ...string) map[string]int {
	m.t.Helper()
	var per map[string]int
	eventually(m.t, fmt.Sprintf("%s: %d instances, all Running, none on %v", workload, n, avoid), func() (bool, string) {
		var total int
		per, total = m.runningPerNode(workload)
		sum := 0
		for node, c := range per {
			sum += c
			for _, a := range avoid {
				if node == a {
					return false, toJSON(m.instances(workload))
				}
			}
		}
		return sum == n && total == n, toJSON(m.instances(workload))
	})
	return per
}

// perLabel sums per-node counts by the value of a node label.
func perLabel(per map[string]int, nodes map[string]clusterNode, key string) map[string]int {
	out := map[string]int{}
	for n, c := range per {
		out[nodes[n].Labels[key]] += c
	}
	return out
}
