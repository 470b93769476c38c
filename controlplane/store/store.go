// Package store is the control plane's typed view of etcd: every record is a
// protobuf message under a key prefixed by its kind, every write that depends
// on a read is a compare-and-swap on the record's mod revision, and watches
// tell the loops when to look again.
package store

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// MaxOpsPerTxn bounds the operations the store puts in one transaction; the
// embedded etcd is configured to accept at least this many.
const MaxOpsPerTxn = 1024

// Versioned is a record with the mod revision it was read at.
type Versioned[T proto.Message] struct {
	Name        string
	Value       T
	ModRevision int64
}

// Collection is the records of one kind, addressed by name.
type Collection[T proto.Message] struct {
	kv     clientv3.KV
	prefix string
	kind   string
	newT   func() T
}

// Store holds the collections over one etcd client.
type Store struct {
	Client    *clientv3.Client
	Workloads Collection[*v1.Workload]
	Instances Collection[*v1.Instance]
	Statuses  Collection[*v1.InstanceStatus]
	Nodes     Collection[*v1.Node]
	// configs
	Configs    Collection[*v1.Config]
	Secrets    Collection[*v1.Secret]
	SecretKeys Collection[*v1.SecretKey]
	// rollouts
	Revisions Collection[*v1.Revision]
	// state
	Volumes        Collection[*v1.Volume]
	RemovedVolumes Collection[*v1.Volume] // named <node>/<uid>
}

// New wraps an etcd client.
func New(cli *clientv3.Client) *Store {
	return &Store{
		Client:    cli,
		Workloads: Collection[*v1.Workload]{cli, WorkloadsPrefix, "workload", func() *v1.Workload { return &v1.Workload{} }},
		Instances: Collection[*v1.Instance]{cli, InstancesPrefix, "instance", func() *v1.Instance { return &v1.Instance{} }},
		Statuses:  Collection[*v1.InstanceStatus]{cli, StatusPrefix, "instance status", func() *v1.InstanceStatus { return &v1.InstanceStatus{} }},
		Nodes:     Collection[*v1.Node]{cli, NodesPrefix, "node", func() *v1.Node { return &v1.Node{} }},
		// configs
		Configs:    Collection[*v1.Config]{cli, ConfigsPrefix, "config", func() *v1.Config { return &v1.Config{} }},
		Secrets:    Collection[*v1.Secret]{cli, SecretsPrefix, "secret", func() *v1.Secret { return &v1.Secret{} }},
		SecretKeys: Collection[*v1.SecretKey]{cli, SecretKeysPrefix, "secret key", func() *v1.SecretKey { return &v1.SecretKey{} }},
		// rollouts
		Revisions: Collection[*v1.Revision]{cli, RevisionsPrefix, "revision", func() *v1.Revision { return &v1.Revision{} }},
		// state
		Volumes:        Collection[*v1.Volume]{cli, VolumesPrefix, "volume", func() *v1.Volume { return &v1.Volume{} }},
		RemovedVolumes: Collection[*v1.Volume]{cli, RemovedVolumesPrefix, "removed volume", func() *v1.Volume { return &v1.Volume{} }},
	}
}

// Key is the etcd key of the record called name.
func (c Collection[T]) Key(name string) string { return c.prefix + name }

// Prefix is the key prefix of the collection.
func (c Collection[T]) Prefix() string { return c.prefix }

// NameOf returns the record name of a key in this collection.
func (c Collection[T]) NameOf(key []byte) string { return strings.TrimPrefix(string(key), c.prefix) }

// Decode parses a stored value.
func (c Collection[T]) Decode(b []byte) (T, error) {
	v := c.newT()
	if err := proto.Unmarshal(b, v); err != nil {
		return v, fmt.Errorf("decode %s: %w", c.kind, err)
	}
	return v, nil
}

// Get reads one record; a missing one is errdefs.ErrNotFound.
func (c Collection[T]) Get(ctx context.Context, name string) (Versioned[T], error) {
	resp, err := c.kv.Get(ctx, c.Key(name))
	if err != nil {
		return Versioned[T]{}, unavailable(err)
	}
	if len(resp.Kvs) == 0 {
		return Versioned[T]{}, errdefs.NotFoundf("%s %q not found", c.kind, name)
	}
	v, err := c.Decode(resp.Kvs[0].Value)
	if err != nil {
		return Versioned[T]{}, err
	}
	return Versioned[T]{Name: name, Value: v, ModRevision: resp.Kvs[0].ModRevision}, nil
}

// List reads every record of the collection and the store revision it was
// read at (watch from rev+1 to miss nothing).
func (c Collection[T]) List(ctx context.Context) ([]Versioned[T], int64, error) {
	resp, err := c.kv.Get(ctx, c.prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, 0, unavailable(err)
	}
	out := make([]Versioned[T], 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		v, err := c.Decode(kv.Value)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", kv.Key, err)
		}
		out = append(out, Versioned[T]{Name: c.NameOf(kv.Key), Value: v, ModRevision: kv.ModRevision})
	}
	return out, resp.Header.Revision, nil
}

// ListUnder reads the records whose names start with prefix.
func (c Collection[T]) ListUnder(ctx context.Context, prefix string) ([]Versioned[T], error) {
	resp, err := c.kv.Get(ctx, c.prefix+prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]Versioned[T], 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		v, err := c.Decode(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", kv.Key, err)
		}
		out = append(out, Versioned[T]{Name: c.NameOf(kv.Key), Value: v, ModRevision: kv.ModRevision})
	}
	return out, nil
}

// Create writes a new record; if one exists it fails with ErrAlreadyExists.
func (c Collection[T]) Create(ctx context.Context, name string, v T) (int64, error) {
	op, err := c.PutOp(name, v)
	if err != nil {
		return 0, err
	}
	key := c.Key(name)
	resp, err := c.kv.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).Then(op).Commit()
	if err != nil {
		return 0, unavailable(err)
	}
	if !resp.Succeeded {
		return 0, errdefs.Existsf("%s %q already exists", c.kind, name)
	}
	return resp.Header.Revision, nil
}

// Update replaces a record if it is still at modRev; otherwise ErrConflict.
func (c Collection[T]) Update(ctx context.Context, name string, v T, modRev int64) (int64, error) {
	op, err := c.PutOp(name, v)
	if err != nil {
		return 0, err
	}
	resp, err := c.kv.Txn(ctx).If(c.Unchanged(name, modRev)).Then(op).Commit()
	if err != nil {
		return 0, unavailable(err)
	}
	if !resp.Succeeded {
		return 0, errdefs.Conflictf("%s %q changed since it was read", c.kind, name)
	}
	return resp.Header.Revision, nil
}

// PutOp is the write of v, for use in a transaction.
func (c Collection[T]) PutOp(name string, v T, opts ...clientv3.OpOption) (clientv3.Op, error) {
	b, err := proto.Marshal(v)
	if err != nil {
		return clientv3.Op{}, fmt.Errorf("encode %s %q: %w", c.kind, name, err)
	}
	return clientv3.OpPut(c.Key(name), string(b), opts...), nil
}

// DeleteOp is the deletion of the record called name, for a transaction.
func (c Collection[T]) DeleteOp(name string) clientv3.Op { return clientv3.OpDelete(c.Key(name)) }

// Unchanged compares the record's mod revision with modRev.
func (c Collection[T]) Unchanged(name string, modRev int64) clientv3.Cmp {
	return clientv3.Compare(clientv3.ModRevision(c.Key(name)), "=", modRev)
}

// Txn runs guarded operations in batches of at most MaxOpsPerTxn; each batch
// succeeds or fails as a whole. It returns how many batches failed their
// comparisons (the caller re-reads and tries again on its next pass).
func Txn(ctx context.Context, kv clientv3.KV, cmps []clientv3.Cmp, ops []clientv3.Op) (failed int, err error) {
	if len(cmps) != 0 && len(cmps) != len(ops) {
		return 0, fmt.Errorf("store.Txn: %d comparisons for %d operations", len(cmps), len(ops))
	}
	for start := 0; start < len(ops); start += MaxOpsPerTxn / 2 {
		end := min(start+MaxOpsPerTxn/2, len(ops))
		txn := kv.Txn(ctx)
		if len(cmps) != 0 {
			txn = txn.If(cmps[start:end]...)
		}
		resp, err := txn.Then(ops[start:end]...).Commit()
		if err != nil {
			return failed, unavailable(err)
		}
		if !resp.Succeeded {
			failed++
		}
	}
	return failed, nil
}

func unavailable(err error) error { return EtcdError("", err) }

// MaxRequestBytes is the largest request the members' etcd takes
// (membership configures it): one blob chunk and its key fit.
const MaxRequestBytes = 2 << 20

// EtcdError categorizes an error etcd returned while doing what (a few
// words, "write workload \"x\""; may be empty). A request over etcd's size
// limit is InvalidArgument: it would fail the same way forever, and a
// client must not be told to try again. A cancelled or expired context is
// returned as it is; anything else is Unavailable.
func EtcdError(what string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	prefix := ""
	if what != "" {
		prefix = what + ": "
	}
	if errors.Is(err, rpctypes.ErrRequestTooLarge) || errors.Is(err, rpctypes.ErrGRPCRequestTooLarge) {
		return errdefs.Invalidf("%sthe write is larger than the %d MiB etcd takes in one request", prefix, MaxRequestBytes>>20)
	}
	return fmt.Errorf("%w: %setcd: %w", errdefs.ErrUnavailable, prefix, err)
}
