package e2e

import (
	"fmt"
	"syscall"
	"testing"
)

// TestCloudLocalProviderKilledLeavesNothingBehind: a server whose local
// provider's nodes run in network namespaces is killed (SIGKILL): its
// agents die with it, and their namespaces and veths are left, named after
// its data dir and pid. Started again on the same data dir, its provider
// removes them before anything else, the nodes of the killed agents are
// removed as gone, and the instances run on new nodes, which the gateway
// reaches at their namespaces' addresses.
func TestCloudLocalProviderKilledLeavesNothingBehind(t *testing.T) {
	if !netnsAllowed() {
		t.Skip("this host does not let the local provider make network namespaces (root and ip)")
	}
	api := freeAddr(t)
	noAgentsLeft(t, api)
	m := startServerOn(t, api, "--node-group", "name=pool,provider=local,min=0,max=3,instances=10", "--scale-down-delay", "10m", "--node-grace", "10m")
	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "load", "--replicas", "15")
	m.waitSettled("load", 15)
	before := m.nodes()
	if len(before) != 2 {
		t.Fatalf("15 instances of 10 per node: want 2 nodes, got %s", toJSON(before))
	}
	pid := m.server.proc.cmd.Process.Pid
	if nss, links := providerNetworks(pid); len(nss) != 2 || len(links) != 2 {
		t.Fatalf("the provider's namespaces %v and veths %v, want 2 of each", nss, links)
	}
	m.server.stop(syscall.SIGKILL)
	eventually(t, "the killed server's agents gone", func() (bool, string) {
		pids := localAgents(api)
		return len(pids) == 0, fmt.Sprint(pids)
	})
	if nss, links := providerNetworks(pid); len(nss) != 2 || len(links) != 2 {
		t.Fatalf("a killed server left namespaces %v and veths %v, want its 2 nodes' (nothing else removes them)", nss, links)
	}

	m.server.start()
	eventually(t, "the server answering again", func() (bool, string) {
		r := m.run("get", "nodes")
		return r.code == 0, r.String()
	})
	if nss, links := providerNetworks(pid); len(nss)+len(links) != 0 {
		t.Errorf("the server started again on the same data dir: namespaces %v and veths %v of the killed one are left", nss, links)
	}
	var old []string
	for name := range before {
		old = append(old, name)
	}
	m.waitSettled("load", 15, old...)
	after := m.nodes()
	for _, name := range old {
		if _, ok := after[name]; ok {
			t.Errorf("node %s of a killed agent is still in the cluster: %s", name, toJSON(after))
		}
	}
	nodeNetworks(t, api, after)

	// The gateway reaches a function on a node at the namespace's address.
	m.deployFunction("testdata/greet.wasm", "greet", "/greet", "--env", "GREETING=hi")
	expect(t, "greet ana, on a node in a namespace", m.call(request{path: "/greet?who=ana"}), 200, "hi, ana!")
	for _, in := range m.instances("greet") {
		if _, ok := after[in.Node]; !ok {
			t.Errorf("greet runs on %q, not on a node of the group %s", in.Node, toJSON(after))
		}
	}
}
