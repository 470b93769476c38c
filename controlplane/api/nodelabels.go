package api

import (
	"context"
	"maps"
	"slices"
	"strings"

	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// LabelNode sets and removes labels of a node: with its join token, the
// only say in the labels that place workloads (and so their secrets) on
// it; the node's own registrations keep them as they are.
func (a *controlAPI) LabelNode(ctx context.Context, req *v1.LabelNodeRequest) (*v1.NodeView, error) {
	if len(req.GetSet())+len(req.GetRemove()) == 0 {
		return nil, errdefs.Invalidf("no label to set or remove: e.g. 'wasmorch node label %s zone=a' or 'zone-'", req.GetName())
	}
	for k, v := range req.GetSet() {
		if err := workloads.ValidateLabel(k, v); err != nil {
			return nil, err
		}
		if slices.Contains(req.GetRemove(), k) {
			return nil, errdefs.Invalidf("label %s is both set and removed", k)
		}
	}
	var what []string
	for _, k := range slices.Sorted(maps.Keys(req.GetSet())) {
		what = append(what, k+"="+req.GetSet()[k])
	}
	for _, k := range req.GetRemove() {
		what = append(what, k+"-")
	}
	return a.s.updateNode(ctx, req.GetName(), "NodeLabeled", "node %s labeled "+strings.ReplaceAll(strings.Join(what, ","), "%", "%%")+" by an admin", func(n *v1.Node) {
		if n.Labels == nil {
			n.Labels = map[string]string{}
		}
		maps.Copy(n.Labels, req.GetSet())
		for _, k := range req.GetRemove() {
			delete(n.Labels, k)
		}
	})
}
