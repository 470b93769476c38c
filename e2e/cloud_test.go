package e2e

import (
	"bytes"

	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestCloudLocalGroupFollowsDemand is issue 20's scenario with the built-in
// local provider in the server's process.
func TestCloudLocalGroupFollowsDemand(t *testing.T) {
	api := freeAddr(t)
	noAgentsLeft(t, api)
	m := startServerOn(t, api, "--node-group", "name=pool,provider=local,min=0,max=3,instances=10", "--scale-down-delay", "2s", "--node-grace", "10m")
	followsDemand(t, m, "local", filepath.Join(m.dataDir, "cloud", "local"))
}

// TestCloudPluginGroupFollowsDemand is the same scenario through the
// plugin protocol: the local provider served by 'wasmorch provider local'
// on a unix socket, which the server dials as provider "ext".
func TestCloudPluginGroupFollowsDemand(t *testing.T) {
	api := freeAddr(t)
	noAgentsLeft(t, api)
	dir := t.TempDir()
	socket := filepath.Join(dir, "provider.sock")
	p := startDaemon(t, "provider", cliEnv(t), "provider", "local", "--socket", socket, "--data-dir", filepath.Join(dir, "nodes"),
		"--node-group", "name=pool,provider=local,min=0,max=3,instances=10")
	eventually(t, "the provider's socket", func() (bool, string) {
		if !p.running() {
			out, _ := os.ReadFile(p.log)
			t.Fatalf("wasmorch provider local exited with %d:\n%s", p.proc.exitCode, out)
		}
		_, err := os.Stat(socket)
		return err == nil, fmt.Sprint(err)
	})
	m := startServerOn(t, api, "--node-provider", "ext="+socket, "--scale-down-delay", "2s", "--node-grace", "10m")
	followsDemand(t, m, "ext", filepath.Join(dir, "nodes"))
}

// noAgentsLeft checks, once the test's processes have stopped, that no
// agent of the server at api is left (and kills those that are).
func noAgentsLeft(t *testing.T, api string) {
	t.Cleanup(func() {
		if pids := localAgents(api); len(pids) > 0 {
			for _, p := range pids {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			t.Errorf("agents %v of the local provider outlived the server", pids)
		}
	})
}

// followsDemand is issue 20's scenario on a server with one node group,
// pool (min 0, max 3, 10 instances per node, of provider), and no agents:
// 25 replicas grow it to 3 real agent processes; a node whose process is
// killed is replaced without waiting for the heartbeat grace (set to 10
// minutes, longer than the test may take); once the workload is gone and
// the shortened scale-down delay has passed, every node is deleted and
// its data dir (under nodesDir) removed.
func followsDemand(t *testing.T, m *multi, provider, nodesDir string) {
	api := m.api
	if ns := m.nodes(); len(ns) != 0 {
		t.Fatalf("a server without agents has nodes: %v", ns)
	}

	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "load", "--replicas", "25")
	m.waitSettled("load", 25)
	ns := m.nodes()
	if len(ns) != 3 {
		t.Fatalf("25 instances of 10 per node: want 3 nodes, got %s", toJSON(ns))
	}
	for name, n := range ns {
		if n.State != "Ready" || n.Labels["node-group"] != "pool" || n.Labels["zone"] != "local" || !strings.HasPrefix(name, "pool-") {
			t.Errorf("node %s = %+v, want a Ready node of group pool in zone local", name, n)
		}
	}
	if pids := localAgents(api); len(pids) != 3 {
		t.Errorf("want 3 agent processes, found %v", pids)
	}
	m.waitNodeGroup(provider, 3, 3)
	if evs := m.events("ScaledUp"); len(evs) == 0 {
		t.Errorf("no ScaledUp event for the scale-up")
	}

	// A node whose machine is gone: its process killed. Its lease would
	// keep it Ready for 10 minutes; the provider no longer lists it, so the
	// controller removes it at once and its instances are replaced (on a
	// new node: the group was full).
	var victim string
	for name := range ns {
		victim = name
		break
	}
	pid := agentPID(t, api, victim)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node "+victim+" removed", func() (bool, string) {
		ns := m.nodes()
		_, there := ns[victim]
		return !there, toJSON(ns)
	})
	deleted := m.events("NodeDeleted")
	if !strings.Contains(strings.Join(deleted, "\n"), "node "+victim+" removed: provider "+provider+" says it no longer exists") {
		t.Errorf("no NodeDeleted event for %s: %v", victim, deleted)
	}
	if notReady := m.events("NodeNotReady"); len(notReady) > 0 {
		t.Errorf("the node was only removed once its heartbeats were missed: %v", notReady)
	}
	m.waitSettled("load", 25, victim)
	eventually(t, "3 Ready nodes again", func() (bool, string) {
		ns := m.nodes()
		ready := 0
		for _, n := range ns {
			if n.State == "Ready" {
				ready++
			}
		}
		return ready == 3 && len(ns) == 3, toJSON(ns)
	})

	// Idle: the group goes back to its min of 0.
	m.mustRun("delete", "load")
	eventually(t, "no nodes", func() (bool, string) {
		ns := m.nodes()
		return len(ns) == 0, toJSON(ns)
	})
	if down := m.events("ScaledDown"); len(down) != 3 {
		t.Errorf("want 3 ScaledDown events, got %v", down)
	}
	eventually(t, "no agent processes", func() (bool, string) {
		pids := localAgents(api)
		return len(pids) == 0, fmt.Sprint(pids)
	})
	// Every decision is counted: 3 nodes and 1 replacement asked for, 1
	// node gone, 3 idle ones deleted.
	for name, want := range map[string]float64{
		`wasmorch_cloud_nodes_requested_total{group="pool"}`:             4,
		`wasmorch_cloud_nodes_removed_total{group="pool",reason="gone"}`: 1,
		`wasmorch_cloud_nodes_removed_total{group="pool",reason="idle"}`: 3,
	} {
		if got := m.metric(name); got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	m.waitNodeGroup(provider, 0, 0)
	eventually(t, "a target size of 0", func() (bool, string) {
		got := m.metric(`wasmorch_cloud_group_target_size{group="pool"}`)
		return got == 0, fmt.Sprint(got)
	})
	dirs, err := os.ReadDir(nodesDir)
	if err != nil || len(dirs) != 0 {
		t.Errorf("the deleted nodes' data dirs are left: %v %v", dirs, err)
	}
}

// TestCloudBadNodeGroupIsRefused: a node group or provider the server
// cannot keep ends it at start with one line naming it.
func TestCloudBadNodeGroupIsRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--node-group", "name=pool,provider=aws,min=0,max=3,instances=10"}, `node group pool: unknown provider "aws" (known: local)`},
		{[]string{"--node-group", "name=pool,provider=local,min=4,max=3,instances=10"}, "node group pool: min 4 is more than max 3"},
		{[]string{"--node-group", "name=pool,provider=local,min=0,max=3"}, "node group pool: instances per node 0 must be at least 1"},
		{[]string{"--node-group", "name=pool,provider=local,size=3"}, `unknown key "size"`},
		{[]string{"--node-provider", "local=/run/p.sock"}, "node provider local: the name of the built-in provider"},
		{[]string{"--node-provider", "ext=p.sock"}, `node provider ext: socket "p.sock" is not an absolute path`},
		{[]string{"--node-provider", "ext=/run/p.sock", "--node-group", "name=pool,provider=ext,max=1,instances=1"}, "node group pool: provider ext is a plugin, which lists its own groups"},
	} {
		r := run(t, cliEnv(t), append([]string{"server", "--data-dir", t.TempDir(), "--api", freeAddr(t), "--http", freeAddr(t), "--metrics-addr", ""}, tc.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
			t.Errorf("server %v: want one line with %q\n%s", tc.args, tc.want, r)
		}
	}
	r := run(t, cliEnv(t), "provider", "local", "--node-group", "name=pool,provider=local,max=1,instances=1")
	oneLineError(t, r, "the provider needs a --socket")
	r = run(t, cliEnv(t), "get", "nodegroups", "-w")
	oneLineError(t, r, "node groups cannot be watched")
}

// waitNodeGroup waits until `get nodegroups` shows group pool of provider
// (min 0, max 3, 10 instances per node) with target and ready nodes.
func (m *multi) waitNodeGroup(provider string, target, ready int) {
	m.t.Helper()
	eventually(m.t, fmt.Sprintf("node group pool with %d nodes asked for, %d Ready", target, ready), func() (bool, string) {
		var gs []struct {
			Name, Provider                            string
			Min, Max, Target, Ready, InstancesPerNode int
		}
		m.getJSON(&gs, "nodegroups")
		return len(gs) == 1 && gs[0].Name == "pool" && gs[0].Provider == provider && gs[0].Min == 0 && gs[0].Max == 3 && gs[0].InstancesPerNode == 10 &&
			gs[0].Target == target && gs[0].Ready == ready, fmt.Sprintf("%+v", gs)
	})
}

// events returns the messages of the cluster's events with reason.
func (m *multi) events(reason string) []string {
	m.t.Helper()
	var evs []struct {
		Reason  string `json:"reason"`
		Message string `json:"message"`
	}
	m.getJSON(&evs, "events")
	var out []string
	for _, e := range evs {
		if e.Reason == reason {
			out = append(out, e.Message)
		}
	}
	return out
}

// localAgents returns the pids of the `wasmorch agent` processes joined to
// the server at api (the local provider's nodes).
func localAgents(api string) []int {
	var out []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
		if len(args) > 3 && string(args[1]) == "agent" && string(args[2]) == "--server" && string(args[3]) == api {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			out = append(out, pid)
		}
	}
	return out
}

// agentPID returns the pid of the agent of node.
func agentPID(t *testing.T, api, node string) int {
	t.Helper()
	for _, pid := range localAgents(api) {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if bytes.Contains(b, []byte("\x00--name\x00"+node+"\x00")) {
			return pid
		}
	}
	t.Fatalf("no agent process of node %s", node)
	return 0
}
