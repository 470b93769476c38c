package workloads

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/resources"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// A plain TCP service (services: --tcp) serves on its node's own port, so
// a port is the cluster's: one workload holds it, as one holds an HTTP
// route. Its claim (store.PortsPrefix + the port, valued the workload's
// name) is written in the transaction that writes the workload, on the
// condition that nobody else holds it, so that two deploys of one port at
// the same moment cannot both succeed; it is released in the transaction
// that deletes the workload or changes its port. Where the instances run,
// the scheduler keeps one per node (a node's ports in use).

// PortClaimKey is the key of port's claim.
func PortClaimKey(port int32) string { return fmt.Sprintf("%s%d", store.PortsPrefix, port) }

// PortTaken is the error of a port another workload holds.
func PortTaken(port int32, holder string) error {
	return errdefs.Preconditionf("port %d is already served by workload %s (--tcp): choose another --port, or delete %s first", port, holder, holder)
}

// ClaimPort returns what the transaction writing workload name with spec
// (prev: its spec until now, nil for a new workload) must compare and do
// to hold spec's node port: claim it if free, keep it if name holds it,
// take it over from a workload that no longer serves on it, and release
// prev's when the port changes. A port held by another workload that
// serves on it is refused (PortTaken).
func ClaimPort(ctx context.Context, st *store.Store, name string, spec, prev *v1.WorkloadSpec) ([]clientv3.Cmp, []clientv3.Op, error) {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	port, was := resources.NodePort(spec), resources.NodePort(prev)
	if was != 0 && was != port {
		ops = append(ops, ReleasePortOp(name, was))
	}
	if port == 0 {
		return cmps, ops, nil
	}
	holds := func(spec *v1.WorkloadSpec) bool { return resources.NodePort(spec) == port }
	taken := func(holder string) error { return PortTaken(port, holder) }
	c, o, err := store.Claim(ctx, st, PortClaimKey(port), name, fmt.Sprintf("port %d", port), holds, taken)
	if err != nil {
		return nil, nil, err
	}
	return append(cmps, c...), append(ops, o...), nil
}

// ReleasePortOp deletes port's claim if name holds it, for the
// transaction that deletes the workload or changes its port.
func ReleasePortOp(name string, port int32) clientv3.Op {
	return store.ReleaseClaimOp(PortClaimKey(port), name)
}
