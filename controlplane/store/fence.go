package store

import (
	"context"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// Fenced is the KV the leader's loops write through while the member
// leads: every transaction also requires the member's election key to be
// the one it was elected with. A deposed leader that has not noticed yet
// (its lease revoked or expired a moment ago) then writes nothing: its
// transactions fail their comparisons, as if it had lost a race, and it
// stops when its session ends. Without the fence, two members could both
// act as the controller for that moment.
type fencedKV struct {
	clientv3.KV
	fence clientv3.Cmp
}

// Fenced fences writes on el's leadership (el must have won Campaign): see
// fencedKV.
func Fenced(kv clientv3.KV, el *concurrency.Election) clientv3.KV {
	return fencedKV{KV: kv, fence: clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())}
}

// Txn returns a transaction whose If also holds the fence.
func (f fencedKV) Txn(ctx context.Context) clientv3.Txn {
	return &fencedTxn{inner: f.KV.Txn(ctx), fence: f.fence}
}

// fencedTxn collects If, Then and Else so that the fence can be added to
// the comparisons at Commit (etcd's Txn takes If only once).
type fencedTxn struct {
	inner     clientv3.Txn
	fence     clientv3.Cmp
	cmps      []clientv3.Cmp
	then, els []clientv3.Op
}

func (t *fencedTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.cmps = append(t.cmps, cs...)
	return t
}

func (t *fencedTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.then = append(t.then, ops...)
	return t
}

func (t *fencedTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.els = append(t.els, ops...)
	return t
}

func (t *fencedTxn) Commit() (*clientv3.TxnResponse, error) {
	cmps := append(append([]clientv3.Cmp(nil), t.cmps...), t.fence)
	return t.inner.If(cmps...).Then(t.then...).Else(t.els...).Commit()
}
