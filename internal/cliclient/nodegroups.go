package cliclient

import (
	"context"

	"github.com/wasmorch/wasmorch/internal/cliout"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// KindNodeGroups is what `get nodegroups` lists (docs/cloud.md).
const KindNodeGroups = "nodegroups"

// ListNodeGroups lists the node groups as the leader's cloud controller
// last recorded them.
func (c *Client) ListNodeGroups(ctx context.Context) ([]cliout.NodeGroup, error) {
	resp, err := call(ctx, c, "", c.api.ListNodeGroups, &wasmorchv1.ListNodeGroupsRequest{})
	if err != nil {
		return nil, err
	}
	return cliout.NodeGroups(resp.GetNodeGroups()), nil
}
