package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestClusterPlacementHealingAndDrain runs one `wasmorch server` and three
// `wasmorch agent` processes, each agent on its own loopback address, and
// walks through what a cluster operator does: spread replicas across
// zones, pin a workload with a selector, see why one cannot be placed,
// kill -9 an agent and watch its replicas come back elsewhere, restart it
// without duplicates, drain a node, and remove one.
func TestClusterPlacementHealingAndDrain(t *testing.T) {
	t.Parallel()
	m := startServer(t)
	m.startAgent("n1", "127.0.0.2", "zone=a,class=iot")
	m.startAgent("n2", "127.0.0.3", "zone=b")
	m.startAgent("n3", "127.0.0.4", "zone=b,class=iot")

	nodes := m.nodes()
	if n := nodes["n1"]; n.Labels["zone"] != "a" || n.Labels["class"] != "iot" || n.Arch == "" || !strings.HasPrefix(n.Address, "127.0.0.2:") {
		t.Errorf("get nodes shows n1 as %s, want labels zone=a,class=iot, an arch, address 127.0.0.2:*", toJSON(n))
	}
	if table := m.mustRun("get", "nodes").stdout; !hasRow(table, "n3", "Ready") || !strings.Contains(table, "class=iot,zone=b") {
		t.Errorf("get nodes table lacks n3 Ready with its labels:\n%s", table)
	}

	// Spread across zones: zone a has one node, zone b two. Six replicas
	// spread by zone are 3 + 3; spread only by node they would be 2 + 4.
	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "spread", "--replicas", "6", "--spread", "zone")
	per := m.waitSettled("spread", 6)
	if z := perLabel(per, nodes, "zone"); z["a"] != 3 || z["b"] != 3 {
		t.Errorf("replicas per zone = %v (per node %v), want a=3 b=3", z, per)
	}

	// A selector keeps a workload on the matching nodes.
	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "iot", "--replicas", "2", "--selector", "class=iot")
	if per := m.waitSettled("iot", 2); per["n1"]+per["n3"] != 2 {
		t.Errorf("iot runs on %v, want only n1 and n3 (class=iot)", per)
	}

	// A workload that fits nowhere stays Pending and says why.
	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "nofit", "--selector", "zone=mars", "--no-wait")
	eventually(t, "nofit Pending with its reason", func() (bool, string) {
		is := m.instancesWithReasons("nofit")
		return len(is) == 1 && is[0].State == "Pending" && strings.Contains(is[0].Message, "0/3 nodes fit: 3 selector mismatch"), toJSON(is)
	})
	if table := m.mustRun("get", "instances", "--workload", "nofit").stdout; !strings.Contains(table, "Unschedulable: 0/3 nodes fit: 3 selector mismatch") {
		t.Errorf("get instances does not show the pending reason:\n%s", table)
	}
	eventually(t, "describe shows the FailedScheduling event", func() (bool, string) {
		out := m.mustRun("describe", "workload", "nofit").stdout
		return strings.Contains(out, "FailedScheduling") && strings.Contains(out, "zone=mars"), out
	})
	m.mustRun("delete", "nofit")

	// kill -9 of an agent: its node goes NotReady, its instances Lost, and
	// replacements run elsewhere.
	before := m.instances("spread")
	onN2 := 0
	for _, in := range before {
		if in.Node == "n2" {
			onN2++
		}
	}
	if onN2 == 0 {
		t.Fatalf("no spread replica on n2 to lose: %s", toJSON(before))
	}
	killed := time.Now()
	m.agents["n2"].stop(syscall.SIGKILL)
	eventually(t, "n2's replicas shown Lost", func() (bool, string) {
		lost := 0
		is := m.instancesWithReasons("spread")
		for _, in := range is {
			if in.Node == "n2" && in.State == "Lost" && in.Reason == "NodeLost" {
				lost++
			}
		}
		return lost == onN2, toJSON(is)
	})
	eventually(t, "spread back to 6 Running replicas, none on n2", func() (bool, string) {
		per, _ := m.runningPerNode("spread")
		return per["n2"] == 0 && per["n1"]+per["n3"] == 6, toJSON(m.instances("spread"))
	})
	t.Logf("node loss: %d replicas on n2 replaced and Running elsewhere %s after kill -9 (polled every %s through the CLI)", onN2, time.Since(killed).Round(10*time.Millisecond), pollInterval)
	m.waitNode("n2", "NotReady")
	eventually(t, "describe node n2 shows NodeNotReady", func() (bool, string) {
		out := m.mustRun("describe", "node", "n2").stdout
		return strings.Contains(out, "NodeNotReady"), out
	})

	// The agent comes back: the lost instances are dropped, nothing runs
	// twice, and the workload stays at 6.
	m.restartAgent("n2")
	m.waitSettled("spread", 6)
	m.waitSettled("iot", 2)
	eventually(t, "n2 holds nothing after rejoining", func() (bool, string) {
		ns := m.nodes()
		return ns["n2"].Instances == 0, toJSON(ns["n2"])
	})
	ids := map[string]bool{}
	for _, in := range m.instances("") {
		if ids[in.ID] {
			t.Errorf("instance %s listed twice", in.ID)
		}
		ids[in.ID] = true
	}

	// Drain n1: everything moves away, each replacement Running before its
	// original goes; iot (class=iot) can only go to n3.
	r := m.mustRun("drain", "n1")
	if !strings.Contains(r.stdout, "node n1 drained") {
		t.Errorf("drain printed %q", r.stdout)
	}
	m.waitSettled("spread", 6, "n1")
	if per := m.waitSettled("iot", 2, "n1"); per["n3"] != 2 {
		t.Errorf("iot runs on %v after draining n1, want both on n3", per)
	}
	if n := m.nodes()["n1"]; n.Instances != 0 || !n.Cordoned || !n.Draining {
		t.Errorf("n1 after drain = %s, want no instances, cordoned and draining", toJSON(n))
	}
	if table := m.mustRun("get", "nodes").stdout; !hasRow(table, "n1", "Ready,Draining") {
		t.Errorf("get nodes does not show n1 draining:\n%s", table)
	}
	// A new deploy avoids the drained node.
	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "after", "--replicas", "3")
	m.waitSettled("after", 3, "n1")
	m.mustRun("uncordon", "n1")
	if n := m.nodes()["n1"]; n.Cordoned || n.Draining {
		t.Errorf("n1 after uncordon = %s, want schedulable", toJSON(n))
	}
	m.mustRun("cordon", "n3")
	if table := m.mustRun("get", "nodes").stdout; !hasRow(table, "n3", "Ready,Cordoned") {
		t.Errorf("get nodes does not show n3 cordoned:\n%s", table)
	}
	m.mustRun("uncordon", "n3")

	// Removing a Ready node is refused; once its agent is gone it works.
	oneLineError(t, m.run("node", "rm", "n2"), "node n2 is Ready")
	oneLineError(t, m.run("node", "rm", "nosuch"), `node "nosuch" not found`)
	m.agents["n2"].stop(syscall.SIGTERM)
	m.waitNode("n2", "NotReady")
	if r := m.mustRun("node", "rm", "n2"); !strings.Contains(r.stdout, "node n2 removed") {
		t.Errorf("node rm printed %q", r.stdout)
	}
	if ns := m.nodes(); len(ns) != 2 {
		t.Errorf("nodes after rm = %s, want n1 and n3", toJSON(ns))
	}
}

// TestClusterBadPlacementInput checks that bad placement flags are refused
// with one line saying what to do, before anything is stored.
func TestClusterBadPlacementInput(t *testing.T) {
	t.Parallel()
	m := startServer(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--selector", "zone"}, `invalid --selector: "zone" is not key=value`},
		{[]string{"--selector", "zone=a,zone=b"}, `"zone" is given twice`},
		{[]string{"--spread", "zone=a"}, "invalid --spread"},
		{[]string{"--cpu", "lots"}, `invalid --cpu: "lots" is not a CPU amount`},
		{[]string{"--selector", "bad key=a"}, "label key"},
	} {
		r := m.run(append([]string{"deploy", "testdata/hello.wasm", "--name", "bad", "--no-wait"}, tc.args...)...)
		oneLineError(t, r, tc.want)
	}
	if ws := m.workloads(); len(ws) != 0 {
		t.Errorf("workloads after refused deploys: %s", toJSON(ws))
	}
	oneLineError(t, m.run("drain", "ghost"), `node "ghost" not found`)
	oneLineError(t, m.run("describe", "thing", "x"), `cannot describe "thing"`)
}
