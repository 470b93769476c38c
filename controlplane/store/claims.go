package store

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// A claim is a key whose value names the one workload that holds
// something cluster-wide (a route, a node port). It is written in the
// transaction that writes the workload, on the condition that nobody else
// took it meanwhile, so that of two deploys claiming one thing at the same
// moment exactly one succeeds.

// Claim returns what the transaction writing workload name must compare
// and do to hold the claim at key: claim it if free, keep it if name holds
// it, take it over from a workload that no longer has the thing (holds
// says whether a holder's spec still has it; a holder gone counts as not),
// or refuse with taken(holder). what names the thing in a read error.
func Claim(ctx context.Context, st *Store, key, name, what string, holds func(*v1.WorkloadSpec) bool, taken func(holder string) error) ([]clientv3.Cmp, []clientv3.Op, error) {
	resp, err := st.Client.Get(ctx, key)
	if err != nil {
		return nil, nil, EtcdError("read the claim of "+what, err)
	}
	if len(resp.Kvs) == 0 {
		return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, []clientv3.Op{clientv3.OpPut(key, name)}, nil
	}
	kv := resp.Kvs[0]
	if holder := string(kv.Value); holder != name {
		wl, err := st.Workloads.Get(ctx, holder)
		switch {
		case err == nil && holds(wl.Value.GetSpec()):
			return nil, nil, taken(holder)
		case err != nil && !errdefs.IsNotFound(err):
			return nil, nil, err
		}
		// Left by a workload that no longer has it: take it over.
	}
	return []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)}, []clientv3.Op{clientv3.OpPut(key, name)}, nil
}

// ReleaseClaimOp deletes the claim at key if name holds it, for the
// transaction that deletes the workload or lets go of the thing.
func ReleaseClaimOp(key, name string) clientv3.Op {
	return clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.Value(key), "=", name)}, []clientv3.Op{clientv3.OpDelete(key)}, nil)
}
