package e2e

import (
	"strings"
	"testing"
)

// TestNodeThatCannotHoldAModuleIsAvoided: of two agents, one keeps a
// module cache smaller than the module (agent --module-cache-size). The
// instances placed on it fail there with ModuleTooLarge, marked unfit for
// the node; the controller replaces them on the other node and keeps the
// workload's generation off the small one, which describe workload,
// describe node and the events show. A new generation tries it once more.
func TestNodeThatCannotHoldAModuleIsAvoided(t *testing.T) {
	t.Parallel()
	m := startServer(t)
	m.startAgent("roomy", "127.0.0.30", "")
	args := []string{"agent", "--server", m.api, "--token", m.joinToken(), "--name", "tiny", "--data-dir", t.TempDir(),
		"--listen", loopbackAddr(t, "127.0.0.31"), "--module-cache-size", "128"} // sleep.wasm is 259 bytes
	m.agents["tiny"] = startDaemon(t, "agent-tiny", m.env, args...)
	m.waitNode("tiny", "Ready")

	// Four replicas on two empty nodes: two are placed on each.
	m.mustRun("deploy", "testdata/sleep.wasm", "--name", "idle", "--replicas", "4", "--no-wait")
	per := m.waitSettled("idle", 4, "tiny")
	if per["roomy"] != 4 {
		t.Fatalf("running per node %v, want all 4 on roomy", per)
	}
	eventually(t, "describe workload shows the unfit node and the events", func() (bool, string) {
		out := m.mustRun("describe", "workload", "idle").stdout
		return strings.Contains(out, "Unfit node:") && strings.Contains(out, "tiny: ModuleTooLarge (module sha256:") &&
			strings.Contains(out, "more than this node's module cache holds (128 bytes, agent --module-cache-size)") &&
			strings.Contains(out, "NodeUnfit") && strings.Contains(out, "cannot run on node tiny"), out
	})
	eventually(t, "describe node tiny shows why", func() (bool, string) {
		out := m.mustRun("describe", "node", "tiny").stdout
		return strings.Contains(out, "NodeUnfit") && strings.Contains(out, "cannot run workload idle generation 1 (ModuleTooLarge"), out
	})

	// Scaled up, the generation is placed on roomy alone, though tiny is
	// empty: no instance is bound to tiny again.
	m.mustRun("scale", "idle", "--replicas", "8")
	if per := m.waitSettled("idle", 8, "tiny"); per["roomy"] != 8 {
		t.Fatalf("after scaling: running per node %v, want all 8 on roomy", per)
	}
	for _, in := range m.instances("idle") {
		if in.Node == "tiny" {
			t.Fatalf("instance %s bound to tiny again: %s", in.ID, toJSON(m.instances("idle")))
		}
	}

	// Another workload of a small module runs on tiny as before: the
	// record is the workload's, not the node's.
	m.mustRun("deploy", "testdata/trap.wasm", "--name", "small", "--replicas", "2", "--restart", "never", "--no-wait")
	eventually(t, "a 52-byte module placed on tiny", func() (bool, string) {
		for _, in := range m.instancesWithReasons("small") {
			if in.Node == "tiny" && in.Reason != "ModuleTooLarge" && in.State != "Pending" && in.State != "Scheduled" {
				return true, ""
			}
		}
		return false, toJSON(m.instancesWithReasons("small"))
	})
}
