package api

import (
	"context"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// What the cloud controller (controlplane/cloud) does to nodes through the
// API's own paths, so that a node it removes is removed as 'node rm
// --force' removes one (certificates revoked, instances replaced) and a
// join token it mints is one 'token create' would make.

// cloudTokenTTL bounds the token of a node the provider is starting.
const cloudTokenTTL = 30 * time.Minute

// RemoveNodeForced removes a node as 'wasmorch node rm --force' does.
func (s *Server) RemoveNodeForced(ctx context.Context, name string) (int32, error) {
	resp, err := (&controlAPI{s: s}).RemoveNode(ctx, &v1.RemoveNodeRequest{Name: name, Force: true})
	return resp.GetLostInstances(), err
}

// SetCordoned cordons a node, or makes it schedulable again, as 'wasmorch
// cordon' and 'uncordon' do.
func (s *Server) SetCordoned(ctx context.Context, name string, cordoned bool) error {
	if cordoned {
		_, err := (&controlAPI{s: s}).CordonNode(ctx, &v1.NodeRequest{Name: name})
		return err
	}
	_, err := (&controlAPI{s: s}).UncordonNode(ctx, &v1.NodeRequest{Name: name})
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
