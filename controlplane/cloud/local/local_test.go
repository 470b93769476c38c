package local

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
)

// The test binary stands in for the agent binary (and, for the crash
// test, for a provider's process), as os/exec's tests do: what is tested
// here is the nodes' network (namespaces, veths, the relay to the
// servers, the clean-up); the e2e tests run the real agent.
const helperEnv = "WASMORCH_LOCAL_TEST_HELPER"

// helloOf is what the stand-in agent reports in its data dir: the
// address it listens on (the one it would register) and its network
// namespace.
type helloOf struct {
	Listen, Netns string
}

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "agent":
		fakeAgent()
		return
	case "provider":
		crashingProvider()
		return
	}
	os.Exit(m.Run())
}

// fakeAgent listens where the provider says, reports it, and says hello to
// each server with its node name, until stopped.
func fakeAgent() {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	server := fs.String("server", "", "")
	name := fs.String("name", "", "")
	dataDir := fs.String("data-dir", "", "")
	listen := fs.String("listen", "", "")
	fs.String("functions-listen", "", "")
	fs.String("max-instances", "", "")
	fs.String("containerd-socket", "", "")
	var labels []string
	fs.Func("labels", "", func(s string) error { labels = append(labels, s); return nil })
	if len(os.Args) < 2 || os.Args[1] != "agent" || fs.Parse(os.Args[2:]) != nil {
		os.Exit(2)
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "agent %s\n", *name)
			_ = c.Close()
		}
	}()
	ns, _ := os.Readlink("/proc/self/ns/net")
	_ = os.MkdirAll(*dataDir, 0o700)
	b, _ := json.Marshal(helloOf{Listen: lis.Addr().String(), Netns: ns})
	_ = os.WriteFile(filepath.Join(*dataDir, "hello.json"), b, 0o600)
	for _, s := range strings.Split(*server, ",") {
		for {
			c, err := net.Dial("tcp", s)
			if err == nil {
				fmt.Fprintf(c, "%s %s\n", *name, os.Getenv("WASMORCH_TOKEN"))
				_ = c.Close()
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
}

// crashingProvider starts one node and waits to be killed.
func crashingProvider() {
	os.Setenv(helperEnv, "agent") // for its agents
	p, err := New(Config{DataDir: os.Getenv("DATA_DIR"), Groups: []provider.NodeGroup{pool}})
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	if err := p.IncreaseSize(context.Background(), "pool", []provider.NewNode{newNode("pool-crash", os.Getenv("SERVER"))}); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("started")
	select {}
}

var pool = provider.NodeGroup{Name: "pool", Provider: Name, Max: 3, Template: provider.Template{Instances: 10}}

func newNode(name, server string) provider.NewNode {
	return provider.NewNode{Name: name, Labels: map[string]string{provider.LabelGroup: "pool"}, Token: "token-" + name, Servers: []string{server}}
}

// fakeServer accepts connections on loopback and reports each first line.
func fakeServer(t *testing.T) (string, <-chan string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lis.Close() })
	lines := make(chan string, 16)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if l, err := bufio.NewReader(c).ReadString('\n'); err == nil {
					lines <- strings.TrimSpace(l)
				}
			}()
		}
	}()
	return lis.Addr().String(), lines
}

func newProvider(t *testing.T, cfg Config) *Provider {
	t.Helper()
	t.Setenv(helperEnv, "agent")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Binary = exe
	cfg.Groups = []provider.NodeGroup{pool}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// hello waits for the stand-in agent of node to report.
func hello(t *testing.T, p *Provider, node string) helloOf {
	t.Helper()
	path := filepath.Join(p.cfg.DataDir, node, "data", "hello.json")
	for deadline := time.Now().Add(30 * time.Second); ; {
		var h helloOf
		if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &h) == nil {
			return h
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(p.cfg.DataDir, node, "agent.log"))
			t.Fatalf("node %s's agent never reported:\n%s", node, log)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// greeted waits for the server to hear from each node.
func greeted(t *testing.T, lines <-chan string, nodes ...string) {
	t.Helper()
	want := map[string]bool{}
	for _, n := range nodes {
		want[n+" token-"+n] = true
	}
	timeout := time.After(30 * time.Second)
	for len(want) > 0 {
		select {
		case l := <-lines:
			delete(want, l)
		case <-timeout:
			t.Fatalf("the server did not hear from %v", want)
		}
	}
}

// netState is this host's network namespaces and veths of the naming.
func netState(t *testing.T) (nss, links []string) {
	t.Helper()
	es, _ := os.ReadDir(netnsDir)
	for _, e := range es {
		if strings.HasPrefix(e.Name(), nsPrefix) {
			nss = append(nss, e.Name())
		}
	}
	ls, _ := os.ReadDir("/sys/class/net")
	for _, l := range ls {
		if strings.HasPrefix(l.Name(), linkPrefix) {
			alias, _ := os.ReadFile(filepath.Join("/sys/class/net", l.Name(), "ifalias"))
			links = append(links, strings.TrimSpace(string(alias)))
		}
	}
	return nss, links
}

func ofOwner(names []string, owner string) []string {
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, nsPrefix+owner+"-") {
			out = append(out, n)
		}
	}
	return out
}

// TestNodesInTheirOwnNetworkNamespaces: where the host allows it, each
// node's agent runs in a namespace of its own, listens on the namespace's
// address (which this host reaches), and reaches the server on this
// host's loopback through the provider's relay; deleting a node and
// stopping the provider delete its namespace and veth pair.
func TestNodesInTheirOwnNetworkNamespaces(t *testing.T) {
	server, lines := fakeServer(t)
	p := newProvider(t, Config{})
	if ok, why := p.Network(); !ok {
		t.Skipf("network namespaces are not allowed here (%s): TestHostNetworkFallback covers this host", why)
	}
	owner := p.ns.owner
	ctx := context.Background()
	if err := p.IncreaseSize(ctx, "pool", []provider.NewNode{newNode("pool-a", server), newNode("pool-b", server)}); err != nil {
		t.Fatal(err)
	}
	greeted(t, lines, "pool-a", "pool-b")
	self, _ := os.Readlink("/proc/self/ns/net")
	_, subnet, _ := net.ParseCIDR(DefaultSubnet)
	seen := map[string]bool{}
	for _, node := range []string{"pool-a", "pool-b"} {
		h := hello(t, p, node)
		host, _, _ := net.SplitHostPort(h.Listen)
		if h.Netns == self || seen[h.Netns] || !subnet.Contains(net.ParseIP(host)) {
			t.Errorf("node %s's agent: namespace %s (this process %s), listening on %s; want a namespace of its own and an address of %s", node, h.Netns, self, h.Listen, DefaultSubnet)
		}
		seen[h.Netns] = true
		// This host reaches the agent at the address it would register.
		c, err := net.DialTimeout("tcp", h.Listen, 10*time.Second)
		if err != nil {
			t.Fatalf("dialing node %s's agent at %s: %v", node, h.Listen, err)
		}
		l, err := bufio.NewReader(c).ReadString('\n')
		_ = c.Close()
		if err != nil || l != "agent "+node+"\n" {
			t.Errorf("node %s at %s answered %q, %v", node, h.Listen, l, err)
		}
	}
	nss, links := netState(t)
	if got := ofOwner(nss, owner); len(got) != 2 {
		t.Errorf("namespaces of the provider: %v, want 2", got)
	}
	if got := ofOwner(links, owner); len(got) != 2 {
		t.Errorf("veths of the provider: %v, want 2", got)
	}

	if err := p.DeleteNodes(ctx, "pool", []string{"pool-a"}); err != nil {
		t.Fatal(err)
	}
	nss, links = netState(t)
	if got := ofOwner(nss, owner); len(got) != 1 || !strings.HasSuffix(got[0], "-pool-b") {
		t.Errorf("namespaces once pool-a is deleted: %v, want pool-b's only", got)
	}
	if got := ofOwner(links, owner); len(got) != 1 || !strings.HasSuffix(got[0], "-pool-b") {
		t.Errorf("veths once pool-a is deleted: %v, want pool-b's only", got)
	}
	// An agent killed: the node is gone, and so is its network.
	pid := p.nodes["pool-b"].cmd.Process.Pid
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		nodes, _ := p.Nodes(ctx, "pool")
		nss, links = netState(t)
		if len(nodes) == 0 && len(ofOwner(nss, owner)) == 0 && len(ofOwner(links, owner)) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pool-b's agent killed: nodes %v, namespaces %v, veths %v; want none", nodes, nss, links)
		}
		time.Sleep(10 * time.Millisecond)
	}

	if err := p.IncreaseSize(ctx, "pool", []provider.NewNode{newNode("pool-c", server)}); err != nil {
		t.Fatal(err)
	}
	greeted(t, lines, "pool-c")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	nss, links = netState(t)
	if len(ofOwner(nss, owner)) != 0 || len(ofOwner(links, owner)) != 0 {
		t.Errorf("the provider stopped: namespaces %v, veths %v of it are left", nss, links)
	}
}

// TestLeftoversOfAKilledProviderAreRemoved: a provider killed (SIGKILL)
// leaves its nodes' namespaces and veths (its agents die with it); the
// next provider to start removes them, whether of its data dir or another
// whose process is gone.
func TestLeftoversOfAKilledProviderAreRemoved(t *testing.T) {
	server, lines := fakeServer(t)
	if ok, why := newProvider(t, Config{}).Network(); !ok {
		t.Skipf("network namespaces are not allowed here (%s)", why)
	}
	for _, same := range []bool{true, false} {
		dir := t.TempDir()
		exe, _ := os.Executable()
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), helperEnv+"=provider", "DATA_DIR="+dir, "SERVER="+server)
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The provider's own agents are the test binary too.
		l, _ := bufio.NewReader(out).ReadString('\n')
		if l != "started\n" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("the provider process said %q", l)
		}
		greeted(t, lines, "pool-crash")
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		owner := ownerOf(dir)
		nss, links := netState(t)
		if len(ofOwner(nss, owner)) != 1 || len(ofOwner(links, owner)) != 1 {
			t.Fatalf("a killed provider left namespaces %v and veths %v, want its node's one of each", nss, links)
		}
		next := dir
		if !same {
			next = t.TempDir()
		}
		newProvider(t, Config{DataDir: next})
		nss, links = netState(t)
		if len(ofOwner(nss, owner)) != 0 || len(ofOwner(links, owner)) != 0 {
			t.Errorf("a provider started on the same data dir %v: namespaces %v, veths %v of the killed one are left", same, nss, links)
		}
	}
}

// TestHostNetworkFallback: where namespaces cannot be made (here: no ip
// command), the agents share the host's network on loopback, and the
// provider says why.
func TestHostNetworkFallback(t *testing.T) {
	server, lines := fakeServer(t)
	p := newProvider(t, Config{IPCommand: filepath.Join(t.TempDir(), "no-ip")})
	ok, why := p.Network()
	if ok || !strings.Contains(why, "no ip command") && !strings.Contains(why, "CAP_NET_ADMIN") {
		t.Fatalf("Network() = %v, %q; want the host's network for want of ip", ok, why)
	}
	if err := p.IncreaseSize(context.Background(), "pool", []provider.NewNode{newNode("pool-a", server)}); err != nil {
		t.Fatal(err)
	}
	greeted(t, lines, "pool-a")
	h := hello(t, p, "pool-a")
	self, _ := os.Readlink("/proc/self/ns/net")
	if host, _, _ := net.SplitHostPort(h.Listen); host != "127.0.0.1" || h.Netns != self {
		t.Errorf("agent on the host's network: listening on %s in %s, want 127.0.0.1 in %s", h.Listen, h.Netns, self)
	}
}

// TestBootDelay: with a boot delay a node is Creating, its agent not yet
// started, until the delay has passed; one deleted meanwhile never starts,
// and its network and directory are removed.
func TestBootDelay(t *testing.T) {
	server, lines := fakeServer(t)
	ctx := context.Background()
	p := newProvider(t, Config{BootDelay: time.Hour})
	if err := p.IncreaseSize(ctx, "pool", []provider.NewNode{newNode("pool-a", server)}); err != nil {
		t.Fatal(err)
	}
	if nodes, _ := p.Nodes(ctx, "pool"); len(nodes) != 1 || nodes[0].State != provider.Creating {
		t.Fatalf("a node booting: %v, want it Creating", nodes)
	}
	if n, _ := p.TargetSize(ctx, "pool"); n != 1 {
		t.Errorf("target size with a node booting: %d, want 1", n)
	}
	if err := p.DeleteNodes(ctx, "pool", []string{"pool-a"}); err != nil {
		t.Fatal(err)
	}
	if nodes, _ := p.Nodes(ctx, "pool"); len(nodes) != 0 {
		t.Errorf("a booting node deleted: %v, want none", nodes)
	}
	if _, err := os.Stat(filepath.Join(p.cfg.DataDir, "pool-a")); !os.IsNotExist(err) {
		t.Errorf("a booting node deleted: its directory: %v", err)
	}
	if p.ns != nil {
		nss, links := netState(t)
		if len(ofOwner(nss, p.ns.owner))+len(ofOwner(links, p.ns.owner)) != 0 {
			t.Errorf("a booting node deleted: namespaces %v, veths %v left", nss, links)
		}
	}
	select {
	case l := <-lines:
		t.Errorf("a node deleted while booting reached the server: %s", l)
	default:
	}

	q := newProvider(t, Config{BootDelay: 50 * time.Millisecond})
	if err := q.IncreaseSize(ctx, "pool", []provider.NewNode{newNode("pool-b", server)}); err != nil {
		t.Fatal(err)
	}
	greeted(t, lines, "pool-b")
	if nodes, _ := q.Nodes(ctx, "pool"); len(nodes) != 1 || nodes[0].State != provider.Running {
		t.Errorf("a node booted: %v, want it Running", nodes)
	}
}
