package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// netnsLink is a network namespace joined to the host by a veth pair
// (host side hostIP/30, namespace side nsIP/30), created for one test.
type netnsLink struct {
	t            *testing.T
	ns, hostIf   string
	hostIP, nsIP string
}

// newNetns creates the namespace and the veth pair, or skips the test when
// the machine does not allow it. Everything is deleted when the test ends.
func newNetns(t *testing.T) *netnsLink {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("partition test needs root for ip netns; skipped")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("partition test needs the ip command (iproute2); skipped")
	}
	id := rand.N(1 << 16)
	third, fourth := id%250, (id/250%60)*4
	l := &netnsLink{
		t:      t,
		ns:     fmt.Sprintf("wo-e2e-%d-%d", os.Getpid(), id),
		hostIf: fmt.Sprintf("woh%d", id),
		hostIP: fmt.Sprintf("10.213.%d.%d", third, fourth+1),
		nsIP:   fmt.Sprintf("10.213.%d.%d", third, fourth+2),
	}
	nsIf := fmt.Sprintf("won%d", id)
	if out, err := exec.Command("ip", "netns", "add", l.ns).CombinedOutput(); err != nil {
		t.Skipf("ip netns add is not allowed here (%v: %s); skipped", err, out)
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "link", "del", l.hostIf).Run()
		_ = exec.Command("ip", "netns", "del", l.ns).Run()
	})
	for _, args := range [][]string{
		{"link", "add", l.hostIf, "type", "veth", "peer", "name", nsIf},
		{"link", "set", nsIf, "netns", l.ns},
		{"addr", "add", l.hostIP + "/30", "dev", l.hostIf},
		{"link", "set", l.hostIf, "up"},
		{"-n", l.ns, "addr", "add", l.nsIP + "/30", "dev", nsIf},
		{"-n", l.ns, "link", "set", nsIf, "up"},
		{"-n", l.ns, "link", "set", "lo", "up"},
	} {
		l.ip(args...)
	}
	return l
}

func (l *netnsLink) ip(args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// TestClusterPartitionedAgentIsReplacedAndRejoinsWithoutDuplicates puts one
// agent in its own network namespace, cuts its veth, and checks that its
// replicas are replaced on the other agents; when the link comes back the
// agent is told its full desired set, stops the replaced instances it kept
// running, and nothing runs twice.
func TestClusterPartitionedAgentIsReplacedAndRejoinsWithoutDuplicates(t *testing.T) {
	t.Parallel()
	link := newNetns(t)
	m := startServerOn(t, loopbackAddr(t, link.hostIP))
	m.startAgent("p1", "127.0.0.7", "")
	m.startAgent("p2", "127.0.0.8", "")
	// The partitioned agent logs at debug level, where the worker says how
	// many instances each new desired set makes it stop.
	args := []string{"agent", "--server", m.api, "--token", m.joinToken(), "--name", "pn", "--data-dir", t.TempDir(), "--listen", link.nsIP + ":0", "--log-level", "debug"}
	m.agents["pn"] = startWrapped(t, "agent-pn", m.env, []string{"ip", "netns", "exec", link.ns}, args...)
	m.waitNode("pn", "Ready")

	// Six replicas: two on each node.
	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "part", "--replicas", "6")
	per := m.waitSettled("part", 6)
	if per["pn"] == 0 {
		t.Fatalf("no replica on the partitioned node: %v", per)
	}
	onPN := per["pn"]

	link.ip("link", "set", link.hostIf, "down")
	m.waitNode("pn", "NotReady")
	eventually(t, "pn's replicas Lost and replaced on p1 and p2", func() (bool, string) {
		per, _ := m.runningPerNode("part")
		lost := 0
		for _, in := range m.instances("part") {
			if in.Node == "pn" && in.State == "Lost" {
				lost++
			}
		}
		return per["p1"]+per["p2"] == 6 && lost == onPN, toJSON(m.instances("part"))
	})

	link.ip("link", "set", link.hostIf, "up")
	m.waitNode("pn", "Ready")
	m.waitSettled("part", 6, "pn")
	eventually(t, "pn holds nothing and stopped what it kept running", func() (bool, string) {
		out, _ := os.ReadFile(m.agents["pn"].log)
		stopped := regexp.MustCompile(fmt.Sprintf(`msg=converging .*stopping=%d\b`, onPN)).Match(out)
		return m.nodes()["pn"].Instances == 0 && stopped, toJSON(m.nodes()["pn"])
	})
	ids := map[string]bool{}
	for _, in := range m.instances("") {
		if ids[in.ID] || in.State == "Lost" {
			t.Errorf("after the partition healed: %s", toJSON(in))
		}
		ids[in.ID] = true
	}
}
