package local

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Each node's agent runs in a network namespace of its own where the host
// allows it (root, or CAP_NET_ADMIN and CAP_SYS_ADMIN, and iproute2's ip),
// as a machine of its own would: its own loopback and ports, and one
// address, the namespace's end of a veth pair whose other end is on this
// host. The pair is a /30 of Subnet: the host's end .1, the node's .2,
// which is the address the agent listens on and so the one the servers and
// gateways dial. The agent reaches the servers on this host's loopback (a
// namespace has its own) through a relay the provider runs: it listens in
// the namespace on each loopback server address and forwards to the
// server's; other server addresses are reached through the host's end
// (the namespace's default route). Where the host does not allow it, the
// agents share the host's network, on free loopback ports, and the
// provider logs why.
//
// Names, so that what a provider killed before it could clean up leaves
// is found and removed by the next one to start:
//
//	namespace  wol-<owner>-<pid>-<node>   (ip netns list)
//	host veth  wol<block>, its alias the namespace's name
//
// where owner is a hash of the provider's data dir and pid the process
// that made it: a provider starting removes those of its data dir and
// those whose process is gone.

// DefaultSubnet holds the nodes' /30 blocks.
const DefaultSubnet = "10.215.0.0/16"

const (
	nsPrefix   = "wol-"
	linkPrefix = "wol"
	netnsDir   = "/run/netns"
	ipTimeout  = 10 * time.Second
)

// netns is how the provider puts nodes in namespaces (nil: it does not).
type netns struct {
	ip     string     // the ip command
	owner  string     // hash of the data dir
	subnet *net.IPNet // /16 or larger, split in /30 blocks
}

// nodeNet is one node's namespace, veth pair and relays.
type nodeNet struct {
	n              *netns
	name, hostIf   string
	hostIP, nodeIP string

	mu     sync.Mutex
	lis    []net.Listener
	conns  map[net.Conn]struct{}
	closed bool
}

// ownerOf is the owner part of the names of a provider with data dir dir.
func ownerOf(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		abs = dir
	}
	sum := sha256.Sum256([]byte(abs))
	return hex.EncodeToString(sum[:4])
}

// detectNetns returns how to put nodes in namespaces, or why it cannot.
func detectNetns(ipCmd, dataDir, subnet string) (*netns, string) {
	if runtime.GOOS != "linux" {
		return nil, "network namespaces are Linux's"
	}
	if !hasCaps(unix.CAP_NET_ADMIN, unix.CAP_SYS_ADMIN) {
		return nil, "this process lacks CAP_NET_ADMIN or CAP_SYS_ADMIN (it is not root)"
	}
	if ipCmd == "" {
		ipCmd = "ip"
	}
	path, err := exec.LookPath(ipCmd)
	if err != nil {
		return nil, fmt.Sprintf("no ip command (iproute2): %v", err)
	}
	if subnet == "" {
		subnet = DefaultSubnet
	}
	_, sn, err := net.ParseCIDR(subnet)
	if err != nil || sn.IP.To4() == nil {
		return nil, fmt.Sprintf("subnet %q is not an IPv4 CIDR", subnet)
	}
	if ones, _ := sn.Mask.Size(); ones > 28 {
		return nil, fmt.Sprintf("subnet %s is too small", subnet)
	}
	n := &netns{ip: path, owner: ownerOf(dataDir), subnet: sn}
	probe := fmt.Sprintf("%s%s-%d-probe", nsPrefix, n.owner, os.Getpid())
	if out, err := n.run("netns", "add", probe); err != nil {
		return nil, fmt.Sprintf("ip netns add is not allowed here: %v: %s", err, out)
	}
	_, _ = n.run("netns", "del", probe)
	return n, ""
}

// hasCaps reports whether this process has the capabilities in its
// effective set.
func hasCaps(caps ...int) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if hexs, ok := strings.CutPrefix(line, "CapEff:"); ok {
			eff, err := strconv.ParseUint(strings.TrimSpace(hexs), 16, 64)
			if err != nil {
				return false
			}
			for _, c := range caps {
				if eff&(1<<uint(c)) == 0 {
					return false
				}
			}
			return true
		}
	}
	return false
}

func (n *netns) run(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, n.ip, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// leftover parses a namespace or veth alias of this naming: its owner and
// pid, and whether it is one.
func leftover(name string) (owner string, pid int, ok bool) {
	rest, ok := strings.CutPrefix(name, nsPrefix)
	if !ok {
		return "", 0, false
	}
	parts := strings.SplitN(rest, "-", 3)
	if len(parts) != 3 {
		return "", 0, false
	}
	pid, err := strconv.Atoi(parts[1])
	if err != nil {
		return "", 0, false
	}
	return parts[0], pid, true
}

// stale reports whether a namespace or veth of this naming is to be
// removed by a provider of owner starting: one of its own data dir's, or
// one whose process is gone.
func (n *netns) stale(name string) bool {
	owner, pid, ok := leftover(name)
	if !ok {
		return false
	}
	if owner == n.owner {
		return true
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

// sweep removes the veths and namespaces a provider killed before it
// could stop its nodes left: those of this data dir and those whose
// provider's process is gone. It returns what it removed.
func (n *netns) sweep() []string {
	var removed []string
	links, _ := os.ReadDir("/sys/class/net")
	for _, l := range links {
		if !strings.HasPrefix(l.Name(), linkPrefix) {
			continue
		}
		alias, err := os.ReadFile(filepath.Join("/sys/class/net", l.Name(), "ifalias"))
		if err != nil || !n.stale(strings.TrimSpace(string(alias))) {
			continue
		}
		if _, err := n.run("link", "del", l.Name()); err == nil {
			removed = append(removed, l.Name())
		}
	}
	nss, _ := os.ReadDir(netnsDir)
	for _, e := range nss {
		if !n.stale(e.Name()) {
			continue
		}
		if _, err := n.run("netns", "del", e.Name()); err == nil {
			removed = append(removed, e.Name())
		}
	}
	return removed
}

// block returns the host's and the node's address of /30 block b.
func (n *netns) block(b int) (host, node net.IP) {
	base := n.subnet.IP.To4()
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	v += uint32(b) * 4
	ip := func(x uint32) net.IP { return net.IPv4(byte(x>>24), byte(x>>16), byte(x>>8), byte(x)).To4() }
	return ip(v + 1), ip(v + 2)
}

func (n *netns) blocks() int {
	ones, bits := n.subnet.Mask.Size()
	return 1 << (bits - ones - 2)
}

// setup makes node's namespace and veth pair, and relays to the servers.
// It returns the namespace and the servers as the agent in it is to dial
// them.
func (n *netns) setup(node string, servers []string) (*nodeNet, []string, error) {
	nn := &nodeNet{n: n, name: fmt.Sprintf("%s%s-%d-%s", nsPrefix, n.owner, os.Getpid(), node), conns: map[net.Conn]struct{}{}}
	if out, err := n.run("netns", "add", nn.name); err != nil {
		return nil, nil, fmt.Errorf("ip netns add %s: %v: %s", nn.name, err, out)
	}
	ok := false
	defer func() {
		if !ok {
			nn.teardown()
		}
	}()
	// A free /30: the veth's name is the block's, so that two providers
	// never take the same one (a name is made once on a host).
	local := hostAddrs()
	total := n.blocks()
	start := rand.N(total)
	for i := 0; ; i++ {
		if i == total || i == 64 {
			return nil, nil, fmt.Errorf("no free /30 of %s for node %s's veth", n.subnet, node)
		}
		b := (start + i) % total
		host, addr := n.block(b)
		name := fmt.Sprintf("%s%x", linkPrefix, b)
		if len(name) > 15 || local[host.String()] || local[addr.String()] {
			continue
		}
		if _, err := os.Stat(filepath.Join("/sys/class/net", name)); err == nil {
			continue
		}
		out, err := n.run("link", "add", name, "type", "veth", "peer", "name", "eth0", "netns", nn.name)
		if err != nil {
			if strings.Contains(out, "exists") {
				continue
			}
			return nil, nil, fmt.Errorf("ip link add %s: %v: %s", name, err, out)
		}
		nn.hostIf, nn.hostIP, nn.nodeIP = name, host.String(), addr.String()
		break
	}
	for _, args := range [][]string{
		{"link", "set", "dev", nn.hostIf, "alias", nn.name},
		{"addr", "add", nn.hostIP + "/30", "dev", nn.hostIf},
		{"link", "set", "dev", nn.hostIf, "up"},
		{"-n", nn.name, "addr", "add", nn.nodeIP + "/30", "dev", "eth0"},
		{"-n", nn.name, "link", "set", "dev", "eth0", "up"},
		{"-n", nn.name, "link", "set", "dev", "lo", "up"},
		{"-n", nn.name, "route", "add", "default", "via", nn.hostIP},
	} {
		if out, err := n.run(args...); err != nil {
			return nil, nil, fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	var dial []string
	for _, s := range servers {
		host, port, err := net.SplitHostPort(s)
		if err != nil {
			return nil, nil, fmt.Errorf("server address %q: %w", s, err)
		}
		if host == "localhost" {
			host = "127.0.0.1"
		}
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			dial = append(dial, s) // through the host's end
			continue
		}
		addr := net.JoinHostPort(host, port)
		lis, err := nn.listen(addr)
		if err != nil {
			return nil, nil, fmt.Errorf("relay to server %s in namespace %s: %w", s, nn.name, err)
		}
		go nn.relay(lis, addr)
		dial = append(dial, addr)
	}
	ok = true
	return nn, dial, nil
}

// hostAddrs are this host's IPv4 addresses.
func hostAddrs() map[string]bool {
	out := map[string]bool{}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			out[ipn.IP.String()] = true
		}
	}
	return out
}

// path is the namespace's file.
func (nn *nodeNet) path() string { return filepath.Join(netnsDir, nn.name) }

// in runs fn on an OS thread moved into the namespace, and moves it back.
// A thread that cannot be moved back is never reused: its goroutine ends
// still locked to it, and Go then ends the thread.
func (nn *nodeNet) in(fn func() error) error {
	target, err := os.Open(nn.path())
	if err != nil {
		return fmt.Errorf("opening namespace %s: %w", nn.name, err)
	}
	defer target.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		origin, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("opening this thread's network namespace: %w", err)
			return
		}
		defer origin.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- fmt.Errorf("entering namespace %s: %w", nn.name, err)
			return
		}
		err = fn()
		if unix.Setns(int(origin.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- err
	}()
	return <-done
}

// start starts cmd in the namespace: the process is made by a thread in
// it, and so is in it.
func (nn *nodeNet) start(cmd *exec.Cmd) error { return nn.in(cmd.Start) }

// listen listens on addr in the namespace.
func (nn *nodeNet) listen(addr string) (net.Listener, error) {
	var lis net.Listener
	err := nn.in(func() (err error) {
		lis, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	nn.mu.Lock()
	defer nn.mu.Unlock()
	if nn.closed {
		_ = lis.Close()
		return nil, errors.New("the node's network is torn down")
	}
	nn.lis = append(nn.lis, lis)
	return lis, nil
}

// relay forwards each connection lis accepts (in the namespace) to target
// (from this host's network) until lis is closed.
func (nn *nodeNet) relay(lis net.Listener, target string) {
	for {
		c, err := lis.Accept()
		if err != nil {
			return
		}
		go nn.forward(c, target)
	}
}

func (nn *nodeNet) forward(c net.Conn, target string) {
	d := net.Dialer{Timeout: 10 * time.Second}
	s, err := d.Dial("tcp", target)
	if err != nil {
		_ = c.Close()
		return
	}
	if !nn.track(c, s) {
		_ = c.Close()
		_ = s.Close()
		return
	}
	done := make(chan struct{})
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(s, c)
	go pipe(c, s)
	<-done
	<-done
	_ = c.Close()
	_ = s.Close()
	nn.mu.Lock()
	delete(nn.conns, c)
	delete(nn.conns, s)
	nn.mu.Unlock()
}

func (nn *nodeNet) track(cs ...net.Conn) bool {
	nn.mu.Lock()
	defer nn.mu.Unlock()
	if nn.closed {
		return false
	}
	for _, c := range cs {
		nn.conns[c] = struct{}{}
	}
	return true
}

// teardown closes the relays and deletes the veth pair and the namespace
// (once no process is left in it, the kernel frees it). It returns what
// it could not delete.
func (nn *nodeNet) teardown() error {
	nn.mu.Lock()
	nn.closed = true
	lis, conns := nn.lis, nn.conns
	nn.lis, nn.conns = nil, map[net.Conn]struct{}{}
	nn.mu.Unlock()
	for _, l := range lis {
		_ = l.Close()
	}
	for c := range conns {
		_ = c.Close()
	}
	var errs []error
	if nn.hostIf != "" {
		// Deleting one end deletes the pair.
		if out, err := nn.n.run("link", "del", nn.hostIf); err != nil && !strings.Contains(out, "Cannot find") {
			errs = append(errs, fmt.Errorf("ip link del %s: %v: %s", nn.hostIf, err, out))
		}
	}
	if out, err := nn.n.run("netns", "del", nn.name); err != nil && !strings.Contains(out, "No such file") {
		errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", nn.name, err, out))
	}
	return errors.Join(errs...)
}
