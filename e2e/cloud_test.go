package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestCloudLocalGroupFollowsDemand is issue 20's scenario with the built-in
// local provider in the server's process, its group configured on the
// server with max 1 and applied as a NodeGroup with max 3, which overrides
// it; NodeGroups that are not valid or that no provider can make are
// refused in one line, storing nothing.
func TestCloudLocalGroupFollowsDemand(t *testing.T) {
	api := freeAddr(t)
	noAgentsLeft(t, api)
	m := startServerOn(t, api, "--node-group", "name=pool,provider=local,min=0,max=1,instances=10", "--scale-down-delay", "2s", "--node-grace", "10m")
	dir := t.TempDir()
	group := func(file, spec string) string {
		path := filepath.Join(dir, file)
		doc := "apiVersion: wasmorch.dev/v1\nkind: NodeGroup\nmetadata: {name: pool}\nspec:\n" + spec
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	for _, tc := range []struct{ spec, want string }{
		{"  provider: local\n  min: 4\n  max: 3\n  instances: 10\n", "node group pool: min 4 is more than max 3"},
		{"  provider: aws\n  max: 3\n  instances: 10\n", `node group pool: unknown provider "aws" (known: local)`},
		{"  provider: local\n  max: 3\n  instances: 10\n  arch: not" + runtime.GOARCH + "\n", "provider local cannot make nodes of arch not" + runtime.GOARCH},
		{"  provider: local\n  max: 3\n  instances: 10\n  runtimes: [container]\n", "provider local cannot make nodes with runtime container"},
	} {
		oneLineError(t, m.run("apply", "-f", group("bad.yaml", tc.spec)), tc.want)
	}
	m.waitNodeGroupSource("local", 1, "config")
	if r := m.mustRun("apply", "-f", group("pool.yaml", "  provider: local\n  max: 3\n  instances: 10\n  instanceType: agent\n")); !strings.Contains(r.stdout, "nodegroup/pool created") {
		t.Errorf("apply printed %q, want nodegroup/pool created", r.stdout)
	}
	m.waitNodeGroupSource("local", 3, "manifest")
	followsDemand(t, m, "local", filepath.Join(m.dataDir, "cloud", "local"))
	if evs := m.events("NodeGroupApplied"); len(evs) != 1 {
		t.Errorf("want one NodeGroupApplied event, got %v", evs)
	}
	drainsOntoOthers(t, m)

	// diff shows what an apply would change; delete -f takes the object
	// away and the configured group (max 1) applies again.
	if r := m.run("diff", "-f", group("pool2.yaml", "  provider: local\n  max: 2\n  instances: 10\n  instanceType: agent\n")); !strings.Contains(r.stdout, "~ max: 3 -> 2") {
		t.Errorf("diff printed %s, want ~ max: 3 -> 2", r)
	}
	if r := m.mustRun("delete", "-f", group("pool.yaml", "  provider: local\n  max: 3\n  instances: 10\n")); !strings.Contains(r.stdout, "deleted nodegroup/pool") {
		t.Errorf("delete -f printed %q", r.stdout)
	}
	m.waitNodeGroupSource("local", 1, "config")
}

// drainsOntoOthers: a node whose instances can all run on another node for
// the scale-down delay is drained, its instances replaced there first, and
// deleted. Workload a's 10 replicas fill a first node; b's 4 get a second;
// a scaled to 6 leaves b's 4 room on the first node: the second, at most
// half full, is drained, and the 10 instances run on the node left. (Nodes holding an
// instance that cannot move are TestMovable's.)
func drainsOntoOthers(t *testing.T, m *multi) {
	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "a", "--replicas", "10")
	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "b", "--replicas", "4")
	if ns := m.nodes(); len(ns) != 2 {
		t.Fatalf("a (10) and b (4) on nodes of 10: want 2 nodes, got %s", toJSON(ns))
	}
	m.mustRun("scale", "a", "--replicas", "6")
	eventually(t, "one node left, running a's 6 and b's 4", func() (bool, string) {
		ns := m.nodes()
		perA, a := m.runningPerNode("a")
		perB, b := m.runningPerNode("b")
		return len(ns) == 1 && a == 6 && b == 4 && len(perA) == 1 && len(perB) == 1, toJSON(ns) + toJSON(perA) + toJSON(perB)
	})
	if evs := m.events("ScaleDown"); len(evs) != 1 || !strings.Contains(evs[0], "can run on other nodes") {
		t.Errorf("want one ScaleDown (drain) event, got %v", evs)
	}
	// The event is recorded once the node is removed.
	eventually(t, "a ScaledDown event for the drained node", func() (bool, string) {
		evs := m.events("ScaledDown")
		return slices.ContainsFunc(evs, func(e string) bool { return strings.Contains(e, "its instances moved to other nodes") }), strings.Join(evs, "\n")
	})
	if got := m.metric(`wasmorch_cloud_nodes_removed_total{group="pool",reason="drained"}`); got != 1 {
		t.Errorf("nodes removed as drained = %v, want 1", got)
	}
	m.mustRun("delete", "a", "b")
	eventually(t, "no nodes", func() (bool, string) {
		ns := m.nodes()
		return len(ns) == 0, toJSON(ns)
	})
}

// TestCloudPluginGroupFollowsDemand is the same scenario through the
// plugin protocol: the local provider served by 'wasmorch provider local'
// on a unix socket, which the server dials as provider "ext".
func TestCloudPluginGroupFollowsDemand(t *testing.T) {
	api := freeAddr(t)
	noAgentsLeft(t, api)
	dir := t.TempDir()
	socket := filepath.Join(dir, "provider.sock")
	startLocalProvider(t, socket, filepath.Join(dir, "nodes"), "name=pool,provider=local,min=0,max=3,instances=10")
	m := startServerOn(t, api, "--node-provider", "ext="+socket, "--scale-down-delay", "2s", "--node-grace", "10m")
	// A plugin lists its own groups: a NodeGroup of it is refused.
	doc := filepath.Join(dir, "ext.yaml")
	if err := os.WriteFile(doc, []byte("apiVersion: wasmorch.dev/v1\nkind: NodeGroup\nmetadata: {name: other}\nspec: {provider: ext, max: 1, instances: 1}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	oneLineError(t, m.run("apply", "-f", doc), "node group other: provider ext is a plugin, which lists its own groups")
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

	// get nodegroups -w follows the group's changes as the controller
	// records them.
	watch := startDaemon(t, "watch", m.env, "get", "nodegroups", "-w", "-o", "json", "--server", api)
	eventually(t, "the watch's first list", func() (bool, string) {
		out, _ := os.ReadFile(watch.log)
		return bytes.Contains(out, []byte(`"ADDED"`)), string(out)
	})

	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "load", "--replicas", "25")
	m.waitSettled("load", 25)
	ns := m.nodes()
	if len(ns) != 3 {
		t.Fatalf("25 instances of 10 per node: want 3 nodes, got %s", toJSON(ns))
	}
	for name, n := range ns {
		if n.State != "Ready" || n.Labels["node-group"] != "pool" || n.Labels["zone"] != "local" || n.Labels["wasmorch.io/zone"] != "local" || !strings.HasPrefix(name, "pool-") {
			t.Errorf("node %s = %+v, want a Ready node of group pool in zone local", name, n)
		}
	}
	// The provider id's last element, once the node has joined.
	eventually(t, "the nodes labelled with their provider ids", func() (bool, string) {
		ns := m.nodes()
		for name, n := range ns {
			if n.Labels["wasmorch.io/provider-id"] != name {
				return false, toJSON(ns)
			}
		}
		return true, ""
	})
	if pids := localAgents(api); len(pids) != 3 {
		t.Errorf("want 3 agent processes, found %v", pids)
	}
	owner := nodeNetworks(t, api, ns)
	m.waitNodeGroup(provider, 3, 3)
	if evs := m.events("ScaledUp"); len(evs) == 0 {
		t.Errorf("no ScaledUp event for the scale-up")
	}
	// describe nodegroup: its nodes as the provider lists them beside the
	// cluster's view, and its decisions.
	var d struct {
		Group struct{ Provider, Source string }
		Nodes []struct {
			Name, ProviderID, ProviderState, State string
			Instances                              int
		}
		Events []struct{ Reason string }
	}
	eventually(t, "describe nodegroup pool with 3 Running, Ready nodes", func() (bool, string) {
		m.getJSONOf(&d, "describe", "nodegroup", "pool")
		held := 0
		for _, n := range d.Nodes {
			if _, ok := ns[n.Name]; !ok || n.ProviderID != "local:///"+n.Name || n.ProviderState != "Running" || n.State != "Ready" {
				return false, toJSON(d)
			}
			held += n.Instances
		}
		return len(d.Nodes) == 3 && held == 25 && d.Group.Provider == provider && slices.ContainsFunc(d.Events, func(e struct{ Reason string }) bool { return e.Reason == "ScaledUp" }), toJSON(d)
	})

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
	// The event is recorded once the node is removed.
	eventually(t, "a NodeDeleted event for "+victim, func() (bool, string) {
		deleted := strings.Join(m.events("NodeDeleted"), "\n")
		return strings.Contains(deleted, "node "+victim+" removed: provider "+provider+" says it no longer exists"), deleted
	})
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
	eventually(t, "3 ScaledDown events", func() (bool, string) {
		down := m.events("ScaledDown")
		return len(down) == 3, strings.Join(down, "\n")
	})
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
	if owner > 0 {
		if nss, links := providerNetworks(owner); len(nss)+len(links) > 0 {
			t.Errorf("the deleted nodes' network namespaces %v and veths %v are left", nss, links)
		}
	}
	// The watch saw the group grow to 3 Ready nodes and shrink to none.
	eventually(t, "the watch to see the group back at 0", func() (bool, string) {
		out, _ := os.ReadFile(watch.log)
		var seen []string
		for _, line := range bytes.Split(out, []byte("\n")) {
			var ev struct {
				Type   string
				Object struct{ Target, Ready int }
			}
			if json.Unmarshal(line, &ev) == nil && ev.Type != "" {
				seen = append(seen, fmt.Sprintf("%s %d/%d", ev.Type, ev.Object.Target, ev.Object.Ready))
			}
		}
		grew := slices.Index(seen, "MODIFIED 3/3")
		return len(seen) > 0 && strings.HasPrefix(seen[0], "ADDED") && grew > 0 && slices.Contains(seen[grew:], "MODIFIED 0/0"), strings.Join(seen, ", ")
	})
}

// waitNodeGroupSource waits until `get nodegroups` shows group pool of
// provider with max and configured from source.
func (m *multi) waitNodeGroupSource(provider string, max int, source string) {
	m.t.Helper()
	eventually(m.t, fmt.Sprintf("node group pool with max %d from %s", max, source), func() (bool, string) {
		var gs []struct {
			Name, Provider, Source string
			Max                    int
		}
		m.getJSON(&gs, "nodegroups")
		return len(gs) == 1 && gs[0].Provider == provider && gs[0].Max == max && gs[0].Source == source, fmt.Sprintf("%+v", gs)
	})
}

// getJSONOf runs a client command with -o json and decodes its output.
func (m *multi) getJSONOf(out any, args ...string) {
	m.t.Helper()
	r := m.mustRun(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(r.stdout), out); err != nil {
		m.t.Fatalf("%v: %v\n%s", args, err, r.stdout)
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
	r = run(t, cliEnv(t), "get", "nodegroups", "pool")
	oneLineError(t, r, "get nodegroups takes no NAME")
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

// netnsAllowed reports whether this host lets the local provider put its
// nodes in network namespaces, as the provider judges it: root and
// iproute2's ip.
func netnsAllowed() bool {
	_, err := exec.LookPath("ip")
	return os.Geteuid() == 0 && err == nil
}

// The subnet of the local provider's nodes (local.DefaultSubnet).
var nodeSubnet = func() *net.IPNet {
	_, n, _ := net.ParseCIDR("10.215.0.0/16")
	return n
}()

// nodeNetworks checks that each node's agent runs in a network namespace
// of its own and registered the namespace's address, which the servers
// and gateways dial (or, on a host that does not allow namespaces, this
// host's loopback). It returns the pid of the provider's process, whose
// namespaces are named wol-<owner>-<pid>-<node> (0 without namespaces).
func nodeNetworks(t *testing.T, api string, ns map[string]clusterNode) int {
	t.Helper()
	self, _ := os.Readlink("/proc/self/ns/net")
	seen := map[string]bool{}
	owner := 0
	for name, n := range ns {
		host, _, err := net.SplitHostPort(n.Address)
		if err != nil {
			t.Fatalf("node %s's address %q: %v", name, n.Address, err)
		}
		pid := agentPID(t, api, name)
		netns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			t.Fatal(err)
		}
		if !netnsAllowed() {
			if host != "127.0.0.1" || netns != self {
				t.Errorf("node %s on a host without namespaces: address %s, namespace %s (this process %s); want loopback in the host's", name, n.Address, netns, self)
			}
			continue
		}
		if netns == self || seen[netns] || !nodeSubnet.Contains(net.ParseIP(host)) {
			t.Errorf("node %s: address %s, namespace %s (this process %s, seen %v); want a namespace of its own and an address of %s", name, n.Address, netns, self, seen, nodeSubnet)
		}
		seen[netns] = true
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		// The parent is the provider (field 4 of stat, after the command's
		// parenthesis).
		fields := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		owner, _ = strconv.Atoi(fields[1])
		if nss, _ := providerNetworks(owner); !slices.ContainsFunc(nss, func(s string) bool { return strings.HasSuffix(s, "-"+name) }) {
			t.Errorf("no namespace of node %s among the provider's %v", name, nss)
		}
	}
	return owner
}

// providerNetworks returns the network namespaces and veths (by their
// alias, the namespace's name) of the local provider in process pid.
func providerNetworks(pid int) (nss, links []string) {
	infix := fmt.Sprintf("-%d-", pid)
	es, _ := os.ReadDir("/run/netns")
	for _, e := range es {
		if strings.HasPrefix(e.Name(), "wol-") && strings.Contains(e.Name(), infix) {
			nss = append(nss, e.Name())
		}
	}
	ls, _ := os.ReadDir("/sys/class/net")
	for _, l := range ls {
		alias, _ := os.ReadFile(filepath.Join("/sys/class/net", l.Name(), "ifalias"))
		if a := strings.TrimSpace(string(alias)); strings.HasPrefix(a, "wol-") && strings.Contains(a, infix) {
			links = append(links, a)
		}
	}
	return nss, links
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

// startLocalProvider starts 'wasmorch provider local' serving group on
// socket, its nodes' data under dataDir, and waits for its socket.
func startLocalProvider(t *testing.T, socket, dataDir, group string, extra ...string) *daemon {
	t.Helper()
	args := append([]string{"provider", "local", "--socket", socket, "--data-dir", dataDir, "--node-group", group}, extra...)
	p := startDaemon(t, "provider", cliEnv(t), args...)
	eventually(t, "the provider's socket", func() (bool, string) {
		if !p.running() {
			out, _ := os.ReadFile(p.log)
			t.Fatalf("wasmorch provider local exited with %d:\n%s", p.proc.exitCode, out)
		}
		_, err := os.Stat(socket)
		return err == nil, fmt.Sprint(err)
	})
	return p
}
