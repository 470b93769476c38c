package api

import (
	"context"
	"maps"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// What the cloud controller (controlplane/cloud) does to nodes through the
// API's own paths, so that a node it removes is removed as 'node rm
// --force' removes one (certificates revoked, instances replaced) and a
// join token it mints is one 'token create' would make.

// cloudTokenTTL bounds the token of a node the provider is starting.
const cloudTokenTTL = 30 * time.Minute

// CloudNodes are the writes to nodes of the leader's cloud controller,
// each through kv, the leader's fenced KV (store.Fenced): a deposed leader
// that has not noticed yet changes no node.
type CloudNodes struct {
	s  *Server
	kv clientv3.KV
}

// CloudNodes returns the node writes of the cloud controller through kv.
func (s *Server) CloudNodes(kv clientv3.KV) CloudNodes { return CloudNodes{s: s, kv: kv} }

// Remove removes a node as 'wasmorch node rm --force' does.
func (c CloudNodes) Remove(ctx context.Context, name string) (int32, error) {
	resp, err := c.s.removeNode(ctx, c.kv, &v1.RemoveNodeRequest{Name: name, Force: true})
	return resp.GetLostInstances(), err
}

// SetCordoned cordons a node, or makes it schedulable again (ending a
// drain), as 'wasmorch cordon' and 'uncordon' do.
func (c CloudNodes) SetCordoned(ctx context.Context, name string, cordoned bool) error {
	if cordoned {
		_, err := c.s.updateNodeVia(ctx, c.kv, name, "NodeCordoned", "node %s cordoned by the cloud controller: no new instances are placed on it", func(n *v1.Node) {
			n.Cordoned = true
		})
		return err
	}
	_, err := c.s.updateNodeVia(ctx, c.kv, name, "NodeUncordoned", "node %s uncordoned by the cloud controller: instances may be placed on it", func(n *v1.Node) {
		n.Cordoned, n.Draining = false, false
	})
	return err
}

// Drain cordons a node and has the workload controller move its
// instances, replacements first, as 'wasmorch drain' does.
func (c CloudNodes) Drain(ctx context.Context, name string) error {
	_, err := c.s.updateNodeVia(ctx, c.kv, name, "NodeDraining", "node %s draining by the cloud controller: its instances move to other nodes", func(n *v1.Node) {
		n.Cordoned, n.Draining = true, true
	})
	return err
}

// Label sets labels of a node (the provider's well-known ones).
func (c CloudNodes) Label(ctx context.Context, name string, set map[string]string) error {
	for k, v := range set {
		if err := workloads.ValidateLabel(k, v); err != nil {
			return err
		}
	}
	_, err := c.s.updateNodeVia(ctx, c.kv, name, "NodeLabeled", "node %s labeled by the cloud controller with its provider's labels", func(n *v1.Node) {
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		maps.Copy(n.Labels, set)
	})
	return err
}

// NodeToken mints a join token for one node a provider starts: one use,
// bound to its name and labels, as 'token create --node NAME --labels ...
// --uses 1'.
func (s *Server) NodeToken(ctx context.Context, node string, labels map[string]string) (string, error) {
	tok, _, err := s.CreateJoinToken(ctx, TokenSpec{TTL: cloudTokenTTL, Description: "cloud provider node " + node, Node: node, Labels: labels, Uses: 1})
	return tok, err
}

// nodeGroupsPrefix is where the cloud controller keeps each group's status
// (cloud.GroupsPrefix; the api does not import the controller).
const nodeGroupsPrefix = store.CloudPrefix + "groups/"

// ListNodeGroups lists the node groups as the leader's cloud controller
// last recorded them.
func (a *controlAPI) ListNodeGroups(ctx context.Context, _ *v1.ListNodeGroupsRequest) (*v1.ListNodeGroupsResponse, error) {
	resp, err := a.s.store.Client.Get(ctx, nodeGroupsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, errdefs.Unavailablef("list node groups: %v", err)
	}
	out := &v1.ListNodeGroupsResponse{Revision: resp.Header.Revision}
	for _, kv := range resp.Kvs {
		g := &v1.NodeGroupStatus{}
		if proto.Unmarshal(kv.Value, g) == nil {
			out.NodeGroups = append(out.NodeGroups, g)
		}
	}
	sort.Slice(out.NodeGroups, func(i, j int) bool { return out.NodeGroups[i].GetName() < out.NodeGroups[j].GetName() })
	return out, nil
}
