package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/wasmorch/wasmorch/controlplane/cloud/plugin"
	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
)

// TestCloudLeaderChangeDuringScaleUp: three members share a node provider
// plugin (the local provider served by 'wasmorch provider local', whose
// nodes outlive the leader, as a cloud's machines do) that boots a node in
// 5 s. The leader asks for 3 nodes for 25 instances and is killed (SIGKILL)
// while they boot. The new leader counts the old one's recorded scale-up as
// nodes on their way: it asks for none (the group's max of 6 would let it
// double the scale-up), the 3 nodes join through another member, and the
// 25 instances run on them.
func TestCloudLeaderChangeDuringScaleUp(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "provider.sock")
	p := startLocalProvider(t, socket, filepath.Join(dir, "nodes"), "name=pool,provider=local,min=0,max=6,instances=10", "--boot-delay", "5s")
	ext, err := plugin.Dial("ext", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	ctx := context.Background()

	h := startHAClusterTB(t, "--node-provider", "ext="+socket, "--scale-down-delay", "10m", "--node-grace", "10m")
	var leader *member
	eventually(t, "a controller leader", func() (ok bool, seen string) {
		leader, seen = h.controllerLeader(h.members[0].api)
		return leader != nil, seen
	})
	h.mustRun("deploy", "testdata/ticker.wasm", "--name", "load", "--replicas", "25", "--no-wait")
	var asked []provider.Node
	eventually(t, "3 nodes asked of the provider", func() (bool, string) {
		asked, err = ext.Nodes(ctx, "pool")
		return len(asked) == 3, fmt.Sprint(asked, err)
	})
	leader.proc.stop(syscall.SIGKILL)
	// The premise: the leader died while its nodes were booting.
	now, err := ext.Nodes(ctx, "pool")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range now {
		if n.State != provider.Creating {
			t.Fatalf("node %s was %s when the leader was killed: the test did not kill it during the scale-up (the 5 s boot passed first)", n.Name, n.State)
		}
	}

	var others []*member
	for _, m := range h.members {
		if m != leader {
			others = append(others, m)
		}
	}
	eventually(t, "a new controller leader", func() (bool, string) {
		l, seen := h.controllerLeader(others[0].api)
		return l != nil && l != leader, seen
	})
	haAllRunning(t, h, "load", 25)

	// Never a node made twice for one need: the provider made the 3 nodes
	// the killed leader asked for and no other, and they are the cluster's.
	names := func(ns []provider.Node) []string {
		var out []string
		for _, n := range ns {
			out = append(out, n.Name)
		}
		return out
	}
	now, err = ext.Nodes(ctx, "pool")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(names(now), names(asked)) {
		t.Errorf("the provider's nodes: %v, want only the 3 the killed leader asked for, %v", now, asked)
	}
	log, _ := os.ReadFile(p.log)
	if made := strings.Count(string(log), `msg="node booting"`); made != 3 {
		t.Errorf("the provider made %d nodes, want 3:\n%s", made, log)
	}
	var ns []clusterNode
	haGet(h, &ns, "get", "nodes")
	var joined []string
	for _, n := range ns {
		joined = append(joined, n.Name)
	}
	slices.Sort(joined)
	if !slices.Equal(joined, names(asked)) {
		t.Errorf("the cluster's nodes: %v, want the 3 asked for, %v", joined, names(asked))
	}
	var evs []struct{ Reason, Message string }
	haGet(h, &evs, "get", "events")
	var ups []string
	for _, e := range evs {
		switch e.Reason {
		case "ScaledUp":
			ups = append(ups, e.Message)
		case "ScaleUpLost", "NodeNeverJoined":
			t.Errorf("event %s: %s", e.Reason, e.Message)
		}
	}
	if len(ups) != 1 {
		t.Errorf("ScaledUp events %v, want the killed leader's only", ups)
	}
}

// TestCloudLocalLeaderKilledDuringScaleUp: three members each with the
// built-in local provider's group (min 0, max 6, 10 per node). The leader
// asks for 3 nodes for 25 instances, which its provider starts as its own
// children, and is killed (SIGKILL): its agents die with it. The new
// leader finds that none of the nodes the old one recorded exists
// (ScaleUpLost; or the old leader forgot its record when they joined),
// plans again at once and makes 3 nodes of its own, never more; the 25 instances run on them. The killed member, started again,
// removes the network namespaces its killed agents left.
func TestCloudLocalLeaderKilledDuringScaleUp(t *testing.T) {
	h := startHAClusterTB(t, "--node-group", "name=pool,provider=local,min=0,max=6,instances=10", "--scale-down-delay", "10m", "--node-grace", "10m")
	var leader *member
	eventually(t, "a controller leader", func() (ok bool, seen string) {
		leader, seen = h.controllerLeader(h.members[0].api)
		return leader != nil, seen
	})
	h.mustRun("deploy", "testdata/ticker.wasm", "--name", "load", "--replicas", "25", "--no-wait")
	old := leader.proc.proc.cmd.Process.Pid
	var killed []string
	eventually(t, "the leader's 3 agents", func() (bool, string) {
		killed = agentsOf(old)
		return len(killed) == 3, fmt.Sprint(killed)
	})
	leader.proc.stop(syscall.SIGKILL)
	eventually(t, "the killed leader's agents gone", func() (bool, string) {
		left := agentsOf(old)
		return len(left) == 0, fmt.Sprint(left)
	})
	if netnsAllowed() {
		if nss, _ := providerNetworks(old); len(nss) != 3 {
			t.Errorf("the killed leader's nodes' namespaces: %v, want 3 left (nothing else removes them)", nss)
		}
	}

	var others []*member
	for _, m := range h.members {
		if m != leader {
			others = append(others, m)
		}
	}
	var next *member
	eventually(t, "a new controller leader", func() (ok bool, seen string) {
		next, seen = h.controllerLeader(others[0].api)
		return next != nil && next != leader, seen
	})
	haAllRunning(t, h, "load", 25)
	// The new leader's 3 nodes, and none of the killed agents'.
	mine := agentsOf(next.proc.proc.cmd.Process.Pid)
	var ns []clusterNode
	haGet(h, &ns, "get", "nodes")
	var joined []string
	for _, n := range ns {
		joined = append(joined, n.Name)
	}
	slices.Sort(joined)
	if len(mine) != 3 || !slices.Equal(joined, mine) {
		t.Errorf("the cluster's nodes %v, the new leader's agents %v: want the same 3", joined, mine)
	}
	for _, n := range killed {
		if slices.Contains(joined, n) {
			t.Errorf("node %s of a killed agent is still in the cluster", n)
		}
	}
	var evs []struct{ Reason, Message string }
	haGet(h, &evs, "get", "events")
	count := map[string]int{}
	readyBeforeKill := 0 // of the killed leader's nodes
	for _, e := range evs {
		count[e.Reason]++
		if e.Reason == "NodeReady" && slices.ContainsFunc(killed, func(n string) bool { return e.Message == "node "+n+" is ready" }) {
			readyBeforeKill++
		}
	}
	// The killed leader's record of its scale-up is forgotten either by
	// that leader, once its 3 nodes were Ready before it was killed, or by
	// the new one when none of them exists (ScaleUpLost): which one is a
	// race between the kill and the agents joining. Either way the need
	// is planned once more, never twice (the new leader's 3 agents, above).
	// The killed leader records its ScaledUp after its provider started
	// the agents, so the kill may come first: 1 or 2 of them.
	if count["ScaledUp"] < 1 || count["ScaledUp"] > 2 || count["ScaleUpLost"] > 1 || count["ScaleUpLost"] == 0 && readyBeforeKill != len(killed) {
		t.Errorf("events %v (%d of the killed leader's nodes were Ready): want the new leader's ScaledUp (and the killed one's, if it recorded it before it died), and 1 ScaleUpLost unless all 3 were", count, readyBeforeKill)
	}

	leader.proc.start()
	h.waitHealthy(3)
	if netnsAllowed() {
		eventually(t, "the killed member's leftover namespaces removed", func() (bool, string) {
			nss, links := providerNetworks(old)
			return len(nss)+len(links) == 0, fmt.Sprint(nss, links)
		})
	}
}

// agentsOf returns the node names of the agent processes whose parent is
// pid (the local provider's nodes of that process), sorted.
func agentsOf(pid int) []string {
	var out []string
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range procs {
		st, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		fields := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
		if len(fields) < 2 || fields[1] != strconv.Itoa(pid) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(filepath.Dir(p), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if i := slices.Index(args, "--name"); len(args) > 1 && args[1] == "agent" && i > 0 && i+1 < len(args) {
			out = append(out, args[i+1])
		}
	}
	slices.Sort(out)
	return out
}

// haGet runs a client command with -o json against the members that
// answer and decodes its output.
// haAllRunning waits until workload has exactly n instances, all Running.
func haAllRunning(t *testing.T, h *haCluster, workload string, n int) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d instances of %s Running", n, workload), func() (bool, string) {
		var is []instanceJSON
		haGet(h, &is, "get", "instances", "--workload", workload)
		running := 0
		for _, in := range is {
			if in.State == "Running" {
				running++
			}
		}
		return running == n && len(is) == n, toJSON(is)
	})
}

func haGet(h *haCluster, out any, args ...string) {
	h.t.Helper()
	r := h.mustRun(append(args, "-o", "json")...)
	if err := json.Unmarshal([]byte(r.stdout), out); err != nil {
		h.t.Fatalf("%v: %v\n%s", args, err, r.stdout)
	}
}
