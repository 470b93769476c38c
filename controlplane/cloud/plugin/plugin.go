// Package plugin carries the node-provider interface (cloud/provider) over
// gRPC on a unix socket (proto/wasmorch/provider/v1): Serve makes a
// provider a plugin, Dial makes a plugin a provider. This is how a cloud's
// adapter lives outside this repository, and how `wasmorch provider local
// --socket PATH` serves the local provider.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/wasmorch/wasmorch/controlplane/cloud/provider"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/provider/v1"
)

// Listen listens on a unix socket at path that only this user may use
// (a stale socket file left by a killed plugin is replaced).
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("provider socket %s: %w", path, err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", path); err == nil {
			_ = c.Close()
			return nil, fmt.Errorf("provider socket %s: another provider answers there", path)
		}
		_ = os.Remove(path)
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("provider socket %s: %w", path, err)
	}
	// Whoever may connect may start and delete nodes.
	if err := os.Chmod(path, 0o600); err != nil {
		_ = lis.Close()
		return nil, fmt.Errorf("provider socket %s: %w", path, err)
	}
	return lis, nil
}

// Serve serves p on lis until ctx ends.
func Serve(ctx context.Context, lis net.Listener, p provider.Provider) error {
	s := grpc.NewServer()
	pb.RegisterNodeProviderServer(s, &server{p: p})
	go func() {
		<-ctx.Done()
		s.GracefulStop()
	}()
	if err := s.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

type server struct {
	pb.UnimplementedNodeProviderServer
	p provider.Provider
}

func (s *server) NodeGroups(ctx context.Context, _ *pb.NodeGroupsRequest) (*pb.NodeGroupsResponse, error) {
	gs, err := s.p.NodeGroups(ctx)
	if err != nil {
		return nil, err
	}
	out := &pb.NodeGroupsResponse{}
	for _, g := range gs {
		t := g.Template
		out.NodeGroups = append(out.NodeGroups, &pb.NodeGroup{Name: g.Name, MinSize: int32(g.Min), MaxSize: int32(g.Max), Zone: g.Zone,
			Template: &pb.Template{Labels: t.Labels, Arch: t.Arch, Instances: t.Instances, MemoryBytes: t.MemoryBytes, CpuMillis: t.CPUMillis, Runtimes: t.Runtimes, InstanceType: t.InstanceType}})
	}
	return out, nil
}

func (s *server) NodeGroupTargetSize(ctx context.Context, req *pb.NodeGroupTargetSizeRequest) (*pb.NodeGroupTargetSizeResponse, error) {
	n, err := s.p.TargetSize(ctx, req.GetGroup())
	if err != nil {
		return nil, err
	}
	return &pb.NodeGroupTargetSizeResponse{TargetSize: int32(n)}, nil
}

func (s *server) NodeGroupIncreaseSize(ctx context.Context, req *pb.NodeGroupIncreaseSizeRequest) (*pb.NodeGroupIncreaseSizeResponse, error) {
	nodes := make([]provider.NewNode, 0, len(req.GetNodes()))
	for _, n := range req.GetNodes() {
		nodes = append(nodes, provider.NewNode{Name: n.GetName(), Labels: n.GetLabels(), Token: n.GetJoinToken(), Servers: n.GetServers()})
	}
	return &pb.NodeGroupIncreaseSizeResponse{}, s.p.IncreaseSize(ctx, req.GetGroup(), nodes)
}

func (s *server) NodeGroupDeleteNodes(ctx context.Context, req *pb.NodeGroupDeleteNodesRequest) (*pb.NodeGroupDeleteNodesResponse, error) {
	return &pb.NodeGroupDeleteNodesResponse{}, s.p.DeleteNodes(ctx, req.GetGroup(), req.GetNodes())
}

func (s *server) NodeGroupNodes(ctx context.Context, req *pb.NodeGroupNodesRequest) (*pb.NodeGroupNodesResponse, error) {
	nodes, err := s.p.Nodes(ctx, req.GetGroup())
	if err != nil {
		return nil, err
	}
	out := &pb.NodeGroupNodesResponse{}
	for _, n := range nodes {
		out.Instances = append(out.Instances, &pb.Instance{Name: n.Name, ProviderId: n.ProviderID, State: pb.InstanceState(n.State)})
	}
	return out, nil
}

// Client is a plugin as a provider.Provider.
type Client struct {
	name, socket string
	conn         *grpc.ClientConn
	c            pb.NodeProviderClient
}

// Dial returns the plugin at socket as the provider name. It connects
// lazily: a plugin that is down fails calls (the controller retries), not
// the server's start.
func Dial(name, socket string) (*Client, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("provider %s at %s: %w", name, socket, err)
	}
	return &Client{name: name, socket: socket, conn: conn, c: pb.NewNodeProviderClient(conn)}, nil
}

// Name implements provider.Provider.
func (c *Client) Name() string { return c.name }

func (c *Client) wrap(call string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("provider %s (%s): %s: %w", c.name, c.socket, call, err)
}

// NodeGroups asks the plugin for its groups and checks them: a group the
// controller cannot keep is refused with the provider's name.
func (c *Client) NodeGroups(ctx context.Context) ([]provider.NodeGroup, error) {
	resp, err := c.c.NodeGroups(ctx, &pb.NodeGroupsRequest{})
	if err != nil {
		return nil, c.wrap("NodeGroups", err)
	}
	var out []provider.NodeGroup
	seen := map[string]bool{}
	for _, g := range resp.GetNodeGroups() {
		t := g.GetTemplate()
		ng := provider.NodeGroup{Name: g.GetName(), Provider: c.name, Min: int(g.GetMinSize()), Max: int(g.GetMaxSize()), Zone: g.GetZone(),
			Template: provider.Template{Labels: t.GetLabels(), Arch: t.GetArch(), Instances: t.GetInstances(), MemoryBytes: t.GetMemoryBytes(), CPUMillis: t.GetCpuMillis(), Runtimes: t.GetRuntimes(), InstanceType: t.GetInstanceType()}}
		if err := ng.Validate(); err != nil {
			return nil, c.wrap("NodeGroups", err)
		}
		if seen[ng.Name] {
			return nil, c.wrap("NodeGroups", fmt.Errorf("node group %s listed twice", ng.Name))
		}
		seen[ng.Name] = true
		out = append(out, ng)
	}
	return out, nil
}

// TargetSize implements provider.Provider.
func (c *Client) TargetSize(ctx context.Context, group string) (int, error) {
	resp, err := c.c.NodeGroupTargetSize(ctx, &pb.NodeGroupTargetSizeRequest{Group: group})
	if err != nil {
		return 0, c.wrap("NodeGroupTargetSize", err)
	}
	if resp.GetTargetSize() < 0 {
		return 0, c.wrap("NodeGroupTargetSize", fmt.Errorf("group %s: target size %d is negative", group, resp.GetTargetSize()))
	}
	return int(resp.GetTargetSize()), nil
}

// IncreaseSize implements provider.Provider.
func (c *Client) IncreaseSize(ctx context.Context, group string, nodes []provider.NewNode) error {
	req := &pb.NodeGroupIncreaseSizeRequest{Group: group}
	for _, n := range nodes {
		req.Nodes = append(req.Nodes, &pb.NewNode{Name: n.Name, Labels: n.Labels, JoinToken: n.Token, Servers: n.Servers})
	}
	_, err := c.c.NodeGroupIncreaseSize(ctx, req)
	return c.wrap("NodeGroupIncreaseSize", err)
}

// DeleteNodes implements provider.Provider.
func (c *Client) DeleteNodes(ctx context.Context, group string, nodes []string) error {
	_, err := c.c.NodeGroupDeleteNodes(ctx, &pb.NodeGroupDeleteNodesRequest{Group: group, Nodes: nodes})
	return c.wrap("NodeGroupDeleteNodes", err)
}

// Nodes implements provider.Provider; an answer with a node without a name
// or in an unknown state is an error (the controller removes nothing on
// it).
func (c *Client) Nodes(ctx context.Context, group string) ([]provider.Node, error) {
	resp, err := c.c.NodeGroupNodes(ctx, &pb.NodeGroupNodesRequest{Group: group})
	if err != nil {
		return nil, c.wrap("NodeGroupNodes", err)
	}
	out := make([]provider.Node, 0, len(resp.GetInstances()))
	for _, in := range resp.GetInstances() {
		st := provider.State(in.GetState())
		if in.GetName() == "" || st < provider.Creating || st > provider.Deleting {
			return nil, c.wrap("NodeGroupNodes", fmt.Errorf("group %s: node %q in state %v is not a node", group, in.GetName(), in.GetState()))
		}
		out = append(out, provider.Node{Name: in.GetName(), ProviderID: in.GetProviderId(), State: st})
	}
	return out, nil
}

// Close closes the connection (the plugin keeps running).
func (c *Client) Close() error { return c.conn.Close() }
