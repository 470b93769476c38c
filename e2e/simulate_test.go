package e2e

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestSimulatedNodes runs `wasmorch simulate` against a `wasmorch server`
// as someone sizing a control plane would: 20 hollow nodes join with a
// token, a 40-replica workload is deployed onto them and reported Running,
// and once the simulator stops they are NotReady. A second start reuses
// the nodes' certificates without a token.
func TestSimulatedNodes(t *testing.T) {
	t.Parallel()
	m := startServer(t)
	simDir := t.TempDir()
	sim := startDaemon(t, "simulate", m.env, "simulate", "--server", m.api, "--token", joinToken(t, m.env, m.api, "--labels", "simulated=true,pool=e2e,zone=*"), "--nodes", "20", "--data-dir", simDir, "--zones", "4", "--labels", "pool=e2e")
	eventually(t, "20 simulated nodes Ready", func() (bool, string) {
		if !sim.running() {
			out, _ := os.ReadFile(sim.log)
			t.Fatalf("simulate exited with %d:\n%s", sim.proc.exitCode, out)
		}
		return countNodes(m.nodes(), "Ready") == 20, toJSON(m.nodes())
	})
	n := m.nodes()["sim-0005"]
	if n.Labels["simulated"] != "true" || n.Labels["zone"] != "z1" || n.Labels["pool"] != "e2e" || n.Arch == "" {
		t.Errorf("get nodes shows sim-0005 as %s, want labels simulated=true, zone=z1, pool=e2e and an arch", toJSON(n))
	}

	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "hollow", "--replicas", "40", "--spread", "zone")
	is := m.instances("hollow")
	perNode := map[string]int{}
	for _, in := range is {
		if in.State != "Running" || !strings.HasPrefix(in.Node, "sim-") {
			t.Errorf("instance %s is %s on %q, want Running on a simulated node", in.ID, in.State, in.Node)
		}
		perNode[in.Node]++
	}
	if len(is) != 40 || len(perNode) != 20 {
		t.Errorf("%d instances on %d nodes, want 40 spread over the 20 nodes: %v", len(is), len(perNode), perNode)
	}

	sim.stop(syscall.SIGTERM)
	if sim.proc.exitCode != 0 {
		t.Errorf("simulate exited with %d after SIGTERM, want 0", sim.proc.exitCode)
	}
	out, _ := os.ReadFile(sim.log)
	if !strings.Contains(string(out), "simulating 20 nodes against "+m.api) || !strings.Contains(string(out), "simulated 20 nodes for") {
		t.Errorf("simulate printed no start line and summary:\n%s", out)
	}
	eventually(t, "the simulated nodes NotReady", func() (bool, string) {
		return countNodes(m.nodes(), "NotReady") == 20, toJSON(m.nodes())
	})

	// Started again on the same data dir, the nodes need no token.
	again := startDaemon(t, "simulate-again", m.env, "simulate", "--server", m.api, "--nodes", "20", "--data-dir", simDir, "--zones", "4", "--labels", "pool=e2e")
	eventually(t, "the simulated nodes Ready again", func() (bool, string) {
		if !again.running() {
			out, _ := os.ReadFile(again.log)
			t.Fatalf("simulate exited with %d:\n%s", again.proc.exitCode, out)
		}
		return countNodes(m.nodes(), "Ready") == 20, toJSON(m.nodes())
	})
	m.waitSettled("hollow", 40)
}

// TestSimulateErrors: a simulator that cannot join says why, on one line.
func TestSimulateErrors(t *testing.T) {
	t.Parallel()
	m := startServer(t)
	r := m.run("simulate", "--nodes", "3", "--data-dir", t.TempDir())
	oneLineError(t, r, "sim-0000 cannot join the cluster")
	if !strings.Contains(r.stderr, "--token") {
		t.Errorf("the error does not say to pass --token:\n%s", r)
	}
	tok := m.joinToken()
	forged := fmt.Sprintf("wmt_aaaaaaaa.%s", strings.SplitN(tok, ".", 2)[1])
	r = m.run("simulate", "--nodes", "3", "--data-dir", t.TempDir(), "--token", forged)
	oneLineError(t, r, "not valid")
}

func countNodes(ns map[string]clusterNode, state string) int {
	n := 0
	for name, node := range ns {
		if strings.HasPrefix(name, "sim-") && node.State == state {
			n++
		}
	}
	return n
}
