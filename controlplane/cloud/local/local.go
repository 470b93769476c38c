// Package local is the built-in node provider whose nodes are real
// `wasmorch agent` processes on this host: each with its own data dir, its
// own network namespace where the host allows it (netns.go; else free
// loopback ports of the host's network) and a join token minted for it
// alone (one use, bound to its name and labels), labelled with its group
// and zone. It is how the cloud controller is tested end to end, and a way
// to give one big machine nodes that come and go with demand.
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
)

// Name is the provider's name in group configs.
const Name = "local"

// DefaultZone labels the nodes of a group that names none.
const DefaultZone = "local"

// stopGrace is how long a stopped agent may take before it is killed.
const stopGrace = 15 * time.Second

// Config configures the provider.
type Config struct {
	// Binary is the wasmorch executable the agents run (default: this
	// process's own).
	Binary string
	// DataDir holds one directory per node (DataDir/<node>), removed with
	// the node.
	DataDir string
	Groups  []provider.NodeGroup
	Logger  *slog.Logger
	// HostNetwork keeps the agents in the host's network even where
	// network namespaces are allowed. IPCommand is iproute2's ip (default:
	// "ip" on PATH) and Subnet the IPv4 range of the nodes' /30 veth
	// pairs (default DefaultSubnet).
	HostNetwork bool
	IPCommand   string
	Subnet      string
	// BootDelay is how long a node is Creating before its agent starts,
	// as a cloud's machine boots (0: it starts at once): what the
	// controller does while nodes are on their way can be seen and
	// tested.
	BootDelay time.Duration
}

// Provider is the local provider.
type Provider struct {
	cfg Config
	log *slog.Logger
	// ns puts each node in a network namespace (nil: the host's network,
	// for hostReason).
	ns         *netns
	hostReason string

	mu     sync.Mutex
	groups map[string]provider.NodeGroup
	nodes  map[string]*agent // by node name
	closed bool
}

var _ provider.Configurable = (*Provider)(nil)

// agent is one node: its process, and whether the provider is stopping it.
// Until started (Config.BootDelay), it is Creating and its process is not
// running; closing cancel then deletes it.
type agent struct {
	group, name, dir string
	cmd              *exec.Cmd
	net              *nodeNet // nil: the host's network
	state            provider.State
	started          bool
	cancel           chan struct{}
	exited           chan struct{}
}

// terminate asks the agent to stop: SIGTERM, or, before it has started,
// not to start. p.mu held.
func (a *agent) terminate() {
	a.state = provider.Deleting
	if a.started {
		_ = a.cmd.Process.Signal(syscall.SIGTERM)
		return
	}
	select {
	case <-a.cancel:
	default:
		close(a.cancel)
	}
}

// New returns the provider for cfg's groups (each must name provider
// local).
func New(cfg Config) (*Provider, error) {
	if cfg.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("local provider: the wasmorch executable: %w", err)
		}
		cfg.Binary = exe
	}
	if cfg.DataDir == "" {
		return nil, errors.New("local provider: DataDir is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Provider{cfg: cfg, log: cfg.Logger.With("provider", Name), groups: map[string]provider.NodeGroup{}, nodes: map[string]*agent{}}
	if err := p.SetNodeGroups(cfg.Groups); err != nil {
		return nil, err
	}
	// Directories of nodes a previous run left (killed before it could
	// stop its agents) belong to no node now.
	if err := os.RemoveAll(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("local provider: clearing %s: %w", cfg.DataDir, err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("local provider: %w", err)
	}
	if cfg.HostNetwork {
		p.hostReason = "asked to (HostNetwork)"
	} else {
		p.ns, p.hostReason = detectNetns(cfg.IPCommand, cfg.DataDir, cfg.Subnet)
	}
	if p.ns == nil {
		p.log.Warn("the nodes' agents share the host's network, on loopback ports: no network namespaces", "reason", p.hostReason)
		return p, nil
	}
	// Namespaces and veths of nodes a previous run left (killed before it
	// could stop its agents), and of providers whose process is gone.
	if removed := p.ns.sweep(); len(removed) > 0 {
		p.log.Info("removed the network namespaces and veths of nodes a stopped provider left", "removed", removed)
	}
	p.log.Info("each node's agent runs in a network namespace of its own", "subnet", p.ns.subnet.String())
	return p, nil
}

// Network says whether the agents run in network namespaces of their own,
// and, if not, why.
func (p *Provider) Network() (namespaces bool, why string) { return p.ns != nil, p.hostReason }

// Name implements provider.Provider.
func (p *Provider) Name() string { return Name }

// SetNodeGroups implements provider.Configurable: the groups are replaced;
// the agents of a group no longer listed are stopped, as a cloud deletes
// the machines of a group that is deleted.
func (p *Provider) SetNodeGroups(gs []provider.NodeGroup) error {
	groups := map[string]provider.NodeGroup{}
	for _, g := range gs {
		if g.Provider != Name {
			return fmt.Errorf("local provider: node group %s is for provider %s", g.Name, g.Provider)
		}
		if err := g.Validate(); err != nil {
			return err
		}
		if err := p.CanMake(g); err != nil {
			return err
		}
		if g.Zone == "" {
			g.Zone = DefaultZone
		}
		groups[g.Name] = g
	}
	p.mu.Lock()
	p.groups = groups
	var gone []string
	for name, a := range p.nodes {
		if _, ok := groups[a.group]; !ok && a.state != provider.Deleting {
			a.terminate()
			gone = append(gone, name)
		}
	}
	p.mu.Unlock()
	if len(gone) > 0 {
		p.log.Info("stopping the nodes of node groups no longer configured", "nodes", gone)
	}
	return nil
}

// CanMake implements provider.Configurable: its nodes are agents on this
// host, with its arch and no container runtime.
func (p *Provider) CanMake(g provider.NodeGroup) error {
	t := g.Template
	if t.Arch != "" && t.Arch != runtime.GOARCH {
		return fmt.Errorf("node group %s: provider local cannot make nodes of arch %s: its nodes are agents on this %s host", g.Name, t.Arch, runtime.GOARCH)
	}
	for _, r := range t.Runtimes {
		if r != "wasm" {
			return fmt.Errorf("node group %s: provider local cannot make nodes with runtime %s: its agents run wasm only", g.Name, r)
		}
	}
	return nil
}

// NodeGroups implements provider.Provider.
func (p *Provider) NodeGroups(context.Context) ([]provider.NodeGroup, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]provider.NodeGroup, 0, len(p.groups))
	for _, g := range p.groups {
		out = append(out, g)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (p *Provider) group(name string) (provider.NodeGroup, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	g, ok := p.groups[name]
	if !ok {
		return g, fmt.Errorf("local provider has no node group %q", name)
	}
	return g, nil
}

// size is the group's target size: its agents not being deleted. p.mu held.
func (p *Provider) size(group string) int {
	n := 0
	for _, a := range p.nodes {
		if a.group == group && a.state != provider.Deleting {
			n++
		}
	}
	return n
}

// TargetSize implements provider.Provider.
func (p *Provider) TargetSize(_ context.Context, group string) (int, error) {
	if _, err := p.group(group); err != nil {
		return 0, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.size(group), nil
}

// IncreaseSize starts an agent for each node.
func (p *Provider) IncreaseSize(_ context.Context, group string, nodes []provider.NewNode) error {
	g, err := p.group(group)
	if err != nil {
		return err
	}
	if len(nodes) == 0 {
		return fmt.Errorf("local provider: increase of group %s by no node", group)
	}
	for _, n := range nodes {
		if err := workloads.ValidateNodeName(n.Name); err != nil {
			return fmt.Errorf("local provider: %w", err)
		}
		if n.Labels[provider.LabelGroup] != group || n.Token == "" || len(n.Servers) == 0 {
			return fmt.Errorf("local provider: node %s: its labels must name group %s, and it needs a join token and servers", n.Name, group)
		}
	}
	p.mu.Lock()
	cur := p.size(group)
	p.mu.Unlock()
	if cur+len(nodes) > g.Max {
		return fmt.Errorf("local provider: group %s has %d nodes: %d more would pass its max %d", group, cur, len(nodes), g.Max)
	}
	for _, n := range nodes {
		if err := p.start(g, n); err != nil {
			return err
		}
	}
	return nil
}

// start starts the agent of node n of g.
func (p *Provider) start(g provider.NodeGroup, n provider.NewNode) error {
	name, labels := n.Name, n.Labels
	p.mu.Lock()
	_, taken := p.nodes[name]
	p.mu.Unlock()
	if taken {
		return fmt.Errorf("local provider: node %s exists", name)
	}
	dir := filepath.Join(p.cfg.DataDir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("local provider: node %s: %w", name, err)
	}
	logFile, err := os.Create(filepath.Join(dir, "agent.log"))
	if err != nil {
		return fmt.Errorf("local provider: node %s: %w", name, err)
	}
	defer logFile.Close() // the child has its own descriptor
	// The agent binds port 0 and registers the port it got: no port is
	// chosen here that another process could take before the agent binds
	// it. In a namespace, on the namespace's address; else on loopback.
	host, servers := "127.0.0.1", n.Servers
	var nn *nodeNet
	if p.ns != nil {
		nn, servers, err = p.ns.setup(name, n.Servers)
		if err != nil {
			_ = os.RemoveAll(dir)
			return fmt.Errorf("local provider: node %s's network: %w", name, err)
		}
		host = nn.nodeIP
	}
	listen, functions := net.JoinHostPort(host, "0"), net.JoinHostPort(host, "0")
	var lbls []string
	for k, v := range labels {
		lbls = append(lbls, k+"="+v)
	}
	sort.Strings(lbls)
	args := []string{"agent", "--server", strings.Join(servers, ","), "--name", name, "--data-dir", filepath.Join(dir, "data"),
		"--listen", listen, "--functions-listen", functions, "--max-instances", strconv.Itoa(int(g.Template.Instances)), "--containerd-socket", ""}
	for _, l := range lbls {
		args = append(args, "--labels", l)
	}
	cmd := exec.Command(p.cfg.Binary, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The token in the environment, not the arguments, which any user of
	// the host can read.
	cmd.Env = append(os.Environ(), "WASMORCH_TOKEN="+n.Token)
	// The agents die with the process that started them, even killed:
	// nothing else would stop them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	a := &agent{group: g.Name, name: name, dir: dir, cmd: cmd, net: nn, state: provider.Creating, cancel: make(chan struct{}), exited: make(chan struct{})}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		p.cleanup(a)
		return errors.New("local provider is closed")
	}
	if p.cfg.BootDelay > 0 {
		p.nodes[name] = a
		p.log.Info("node booting", "group", g.Name, "node", name, "delay", p.cfg.BootDelay)
		go p.boot(a)
		return nil
	}
	if err := p.run(a); err != nil {
		p.cleanup(a)
		return err
	}
	p.nodes[name] = a
	return nil
}

// run starts a's process (in its namespace, if it has one). p.mu held.
func (p *Provider) run(a *agent) error {
	start := a.cmd.Start
	if a.net != nil {
		start = func() error { return a.net.start(a.cmd) }
	}
	if err := start(); err != nil {
		return fmt.Errorf("local provider: starting the agent of node %s: %w", a.name, err)
	}
	a.started, a.state = true, provider.Running
	if a.net != nil {
		p.log.Info("started node", "group", a.group, "node", a.name, "pid", a.cmd.Process.Pid, "dir", a.dir, "netns", a.net.name, "address", a.net.nodeIP)
	} else {
		p.log.Info("started node", "group", a.group, "node", a.name, "pid", a.cmd.Process.Pid, "dir", a.dir)
	}
	go p.wait(a)
	return nil
}

// boot starts a's agent once the boot delay has passed, unless it was
// deleted meanwhile. An agent that cannot start is a machine that did not
// boot: the node is gone.
func (p *Provider) boot(a *agent) {
	t := time.NewTimer(p.cfg.BootDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-a.cancel:
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if a.state != provider.Deleting && !p.closed {
		err := p.run(a)
		if err == nil {
			return
		}
		p.log.Warn("node did not boot", "group", a.group, "node", a.name, "err", err)
	}
	delete(p.nodes, a.name)
	p.cleanup(a)
	close(a.exited)
}

// cleanup removes the network and directory of an agent that is not
// running.
func (p *Provider) cleanup(a *agent) {
	if a.net != nil {
		if err := a.net.teardown(); err != nil {
			p.log.Warn("removing a node's network namespace", "node", a.name, "err", err)
		}
	}
	_ = os.RemoveAll(a.dir)
}

// wait forgets an agent once its process has exited: a node whose process
// died (killed, crashed) no longer exists, as a deleted machine.
func (p *Provider) wait(a *agent) {
	err := a.cmd.Wait()
	p.mu.Lock()
	deleting := a.state == provider.Deleting
	delete(p.nodes, a.name)
	p.mu.Unlock()
	if !deleting {
		p.log.Warn("node's agent exited", "group", a.group, "node", a.name, "err", err)
	}
	p.cleanup(a)
	close(a.exited)
}

// DeleteNodes stops the named agents (SIGTERM, then SIGKILL after
// stopGrace) and removes their data dirs.
func (p *Provider) DeleteNodes(ctx context.Context, group string, nodes []string) error {
	if _, err := p.group(group); err != nil {
		return err
	}
	var stopping []*agent
	p.mu.Lock()
	for _, n := range nodes {
		a, ok := p.nodes[n]
		if !ok || a.group != group {
			p.mu.Unlock()
			return fmt.Errorf("local provider: group %s has no node %s", group, n)
		}
		stopping = append(stopping, a)
	}
	for _, a := range stopping {
		a.terminate()
	}
	p.mu.Unlock()
	for _, a := range stopping {
		p.stop(ctx, a)
		p.log.Info("deleted node", "group", group, "node", a.name)
	}
	return nil
}

// stop waits for a terminated agent to exit, killing it after stopGrace
// or once ctx ends.
func (p *Provider) stop(ctx context.Context, a *agent) {
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-a.exited:
		return
	case <-t.C:
	case <-ctx.Done():
	}
	p.mu.Lock()
	if a.started {
		_ = a.cmd.Process.Kill()
	}
	p.mu.Unlock()
	<-a.exited
}

// Nodes implements provider.Provider.
func (p *Provider) Nodes(_ context.Context, group string) ([]provider.Node, error) {
	if _, err := p.group(group); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []provider.Node
	for _, a := range p.nodes {
		if a.group == group {
			out = append(out, provider.Node{Name: a.name, ProviderID: "local:///" + a.name, State: a.state})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Close stops every agent.
func (p *Provider) Close() error {
	p.mu.Lock()
	p.closed = true
	all := make([]*agent, 0, len(p.nodes))
	for _, a := range p.nodes {
		a.terminate()
		all = append(all, a)
	}
	p.mu.Unlock()
	for _, a := range all {
		p.stop(context.Background(), a)
	}
	return nil
}
