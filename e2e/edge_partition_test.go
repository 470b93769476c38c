package e2e

import (
	"io/fs"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/workloads"
)

// edgeCut is how long the edge node's link is down: the issue asks for a
// partition of at least a minute, as an edge site losing its uplink.
const edgeCut = 60 * time.Second

// TestEdgeNodeCutOffWithinItsGrace puts a slim agent, whose join token
// gives its node wasmorch.io/lost-after=3m (a node on a flaky link), in a
// network namespace beside a cloud agent at the default 2 s grace, and
// cuts its link for a minute. While it is cut off the control plane keeps
// the node Ready and replaces nothing, and the agent keeps its instances
// running (their logs grow) and restarting per their policy; when the
// link returns nothing is replaced or restarted: the same instances, the
// same restart counts of those that never exit, and a ticker's count
// carries on from where it was, as one process that never stopped.
func TestEdgeNodeCutOffWithinItsGrace(t *testing.T) {
	t.Parallel()
	link := newNetns(t)
	m := startServerOn(t, loopbackAddr(t, link.hostIP))
	m.startAgent("cloud", "127.0.0.24", "")
	grace := workloads.LostAfterLabel + "=3m"
	token := joinToken(t, m.env, m.api, "--node", "edge", "--labels", grace, "--uses", "1")
	dataDir := t.TempDir()
	args := []string{"--server", m.api, "--token", token, "--name", "edge", "--labels", grace, "--data-dir", dataDir, "--listen", link.nsIP + ":0"}
	m.agents["edge"] = startBinary(t, "agent-edge", m.env, slimAgent(t, runtime.GOARCH, ""), []string{"ip", "netns", "exec", link.ns}, args...)
	m.waitNode("edge", "Ready")
	if got := m.nodes()["edge"].Labels[workloads.LostAfterLabel]; got != "3m" {
		t.Fatalf("edge's %s label = %q, want 3m from its token", workloads.LostAfterLabel, got)
	}

	// Four tickers, two on each node; a command that fails and is
	// restarted, on the edge node only.
	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "fleet", "--replicas", "4")
	before := m.waitSettled("fleet", 4)
	if before["edge"] != 2 || before["cloud"] != 2 {
		t.Fatalf("fleet runs %v, want two on each node", before)
	}
	m.mustRun("deploy", "testdata/fail.wasm", "--name", "crashy", "--selector", grace, "--no-wait")
	eventually(t, "crashy restarted on edge", func() (bool, string) {
		is := m.instances("crashy")
		return len(is) == 1 && is[0].Node == "edge" && is[0].Restarts > 0, toJSON(is)
	})
	onEdge := func() []instanceJSON {
		var out []instanceJSON
		for _, in := range m.instances("fleet") {
			if in.Node == "edge" {
				out = append(out, in)
			}
		}
		return out
	}
	kept := onEdge()
	ticks := lastTick(t, m, kept[0].ID)
	crashRestarts := m.instances("crashy")[0].Restarts

	link.ip("link", "set", link.hostIf, "down")
	cut := time.Now()
	logs := logBytes(t, dataDir)
	for time.Since(cut) < edgeCut {
		time.Sleep(5 * time.Second)
		if state := m.nodes()["edge"].State; state != "Ready" {
			t.Fatalf("edge is %s %v after its link went down, within its 3m grace", state, time.Since(cut).Round(time.Second))
		}
		for _, in := range m.instances("") {
			if in.State == "Lost" || (in.Workload == "fleet" && !slices.ContainsFunc(kept, func(k instanceJSON) bool { return k.ID == in.ID }) && in.Node == "edge") {
				t.Fatalf("while edge is cut off, within its grace: %s", toJSON(in))
			}
		}
		if per, _ := m.runningPerNode("fleet"); per["cloud"] != 2 {
			t.Fatalf("while edge is cut off the cloud node runs %v of fleet, want its 2 only", per)
		}
	}
	if grown := logBytes(t, dataDir); grown <= logs {
		t.Errorf("edge's instance logs did not grow while it was cut off (%d bytes, then %d): its instances stopped", logs, grown)
	}

	link.ip("link", "set", link.hostIf, "up")
	eventually(t, "edge reports crashy's restarts made while cut off", func() (bool, string) {
		is := m.instances("crashy")
		return len(is) == 1 && is[0].Restarts > crashRestarts, toJSON(is)
	})
	after := onEdge()
	if toJSON(after) != toJSON(kept) {
		t.Errorf("fleet on edge before the cut:\n%s\nafter:\n%s\nwant the same instances, Running, with the same restarts", toJSON(kept), toJSON(after))
	}
	// The member's connection to the agent's log service may take a moment
	// to come back ("try again in a moment").
	var now int
	eventually(t, "the logs of "+kept[0].ID+" read through the member again", func() (bool, string) {
		var out string
		now, out = tryLastTick(m, kept[0].ID)
		return now > 0, out
	})
	if now < ticks+int(edgeCut/(200*time.Millisecond)) {
		t.Errorf("instance %s ticked %d before the cut and %d after a %v cut: it did not run on through it", kept[0].ID, ticks, now, edgeCut)
	}
	if per := m.waitSettled("fleet", 4); per["edge"] != 2 || per["cloud"] != 2 {
		t.Errorf("fleet runs %v after the link returned, want two on each node", per)
	}
}

var tickLine = regexp.MustCompile(`tick (\d+)`)

// lastTick is the count in the last line a ticker instance printed.
func lastTick(t *testing.T, m *multi, id string) int {
	t.Helper()
	n, out := tryLastTick(m, id)
	if n == 0 {
		t.Fatalf("logs of %s: %s", id, out)
	}
	return n
}

// tryLastTick is lastTick, 0 and what the command said when it fails.
func tryLastTick(m *multi, id string) (int, string) {
	r := m.run("logs", "fleet", "--instance", id, "--tail", "1")
	all := tickLine.FindAllStringSubmatch(r.stdout, -1)
	if r.code != 0 || len(all) == 0 {
		return 0, r.String()
	}
	n, _ := strconv.Atoi(all[len(all)-1][1])
	return n, r.stdout
}

// logBytes is the size of the instance logs an agent keeps in dataDir.
func logBytes(t *testing.T, dataDir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(filepath.Join(dataDir, "logs"), func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err == nil {
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
