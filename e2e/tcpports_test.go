package e2e

import (
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestTCPServiceOnTwoNodes: a plain TCP service's port is the cluster's
// and each node's. Two nodes that are two network stacks (one agent on
// the host, one in a network namespace, so that both can listen on the
// port): two replicas go one to each node and both answer on it; a third
// waits, saying the port is in use on both nodes; another workload on the
// port is refused in one line with nothing stored; `rollout restart`
// replaces the replicas in place and completes; get and describe show the
// port.
func TestTCPServiceOnTwoNodes(t *testing.T) {
	t.Parallel()
	link := newNetns(t)
	m := startServerOn(t, loopbackAddr(t, link.hostIP))
	m.startAgent("host", "127.0.0.9", "")
	args := []string{"agent", "--server", m.api, "--token", m.joinToken(), "--name", "ns", "--data-dir", t.TempDir(), "--listen", link.nsIP + ":0"}
	m.agents["ns"] = startWrapped(t, "agent-ns", m.env, []string{"ip", "netns", "exec", link.ns}, args...)
	m.waitNode("ns", "Ready")

	port := freePort(t)
	p := fmt.Sprint(port)
	m.mustRun("deploy", "testdata/cserver.wasm", "--name", "plain", "--port", p, "--tcp", "--replicas", "2", "--timeout", "3m")
	if per := m.waitSettled("plain", 2); per["host"] != 1 || per["ns"] != 1 {
		t.Fatalf("two replicas of a TCP service on two nodes: %v, want one on each", per)
	}
	answers := func(step string) {
		t.Helper()
		for _, addr := range []string{"127.0.0.1", link.nsIP} {
			eventually(t, step+": the replica on "+addr+" answers on port "+p, func() (bool, string) {
				got, err := tcpGet(net.JoinHostPort(addr, p), "/plain")
				return err == nil && strings.HasSuffix(got, "\r\n\r\nhello from c: GET /plain (0 bytes)\n"), fmt.Sprintf("%q, %v", got, err)
			})
		}
	}
	answers("deployed")

	r := m.run("deploy", "testdata/cserver.wasm", "--name", "other", "--port", p, "--tcp")
	oneLineError(t, r, fmt.Sprintf("error: port %d is already served by workload plain (--tcp): choose another --port, or delete plain first", port))
	if ws := m.workloads(); len(ws) != 1 {
		t.Fatalf("the refused deploy stored something: %s", toJSON(ws))
	}

	m.mustRun("scale", "plain", "--replicas", "3")
	want := fmt.Sprintf("0/2 nodes fit: 2 port %d in use", port)
	eventually(t, "the third replica waits, saying why", func() (bool, string) {
		for _, in := range m.instancesWithReasons("plain") {
			if in.State == "Pending" && strings.Contains(in.Message, want) {
				return true, ""
			}
		}
		return false, toJSON(m.instancesWithReasons("plain"))
	})
	m.mustRun("scale", "plain", "--replicas", "2")
	m.waitSettled("plain", 2)

	m.mustRun("rollout", "restart", "plain")
	m.mustRun("rollout", "status", "plain", "--timeout", "3m")
	if per := m.waitSettled("plain", 2); per["host"] != 1 || per["ns"] != 1 {
		t.Fatalf("after the rollout restart: %v, want one on each node", per)
	}
	for _, in := range m.instances("plain") {
		if in.Generation != 2 {
			t.Errorf("after the rollout restart: %s", toJSON(in))
		}
	}
	answers("restarted")

	if out := m.mustRun("get", "workloads").stdout; !strings.Contains(out, "PORTS") || !strings.Contains(out, p+"/TCP") {
		t.Errorf("get workloads does not show the port:\n%s", out)
	}
	if out := m.mustRun("describe", "workload", "plain").stdout; !strings.Contains(out, p+"/TCP on its node") || !strings.Contains(out, "in place (plain TCP: no surge)") {
		t.Errorf("describe does not show the port and how it rolls:\n%s", out)
	}
}

// tcpGet sends an HTTP/1.0 GET of path to addr over plain TCP and returns
// all it answers.
func tcpGet(addr, path string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, requestLimit)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(requestLimit))
	if _, err := conn.Write([]byte("GET " + path + " HTTP/1.0\r\n\r\n")); err != nil {
		return "", err
	}
	b, err := io.ReadAll(conn)
	return string(b), err
}
