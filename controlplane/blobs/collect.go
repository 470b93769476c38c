package blobs

import (
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/store"
)

// What the garbage collector (controlplane/blobgc.go) needs of the store:
// which blobs exist, read from a keys-only listing so that no chunk is
// loaded, and how to delete one only if it has not been written since.

// Stored is one blob as its keys show it.
type Stored struct {
	Digest string
	// MetaModRevision is the mod revision of its metadata record; zero
	// for chunks without one (an upload that never finished).
	MetaModRevision int64
	// ModRevision is the highest mod revision of its keys: it changes
	// whenever the blob is uploaded again.
	ModRevision int64
}

// ListOp reads the keys of every blob, without their values, for
// Inventory (opts: e.g. at a revision).
func ListOp(opts ...clientv3.OpOption) clientv3.Op {
	return clientv3.OpGet(store.BlobsPrefix, append([]clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly()}, opts...)...)
}

// Inventory groups the keys ListOp read by blob. Keys that are not a
// blob's are ignored.
func Inventory(kvs []*mvccpb.KeyValue) map[string]*Stored {
	out := map[string]*Stored{}
	for _, kv := range kvs {
		name, ok := strings.CutPrefix(string(kv.Key), store.BlobsPrefix)
		if !ok {
			continue
		}
		hexPart, rest, ok := strings.Cut(name, "/")
		if !ok {
			continue
		}
		digest := "sha256:" + hexPart
		if _, err := ParseDigest(digest); err != nil {
			continue
		}
		b := out[digest]
		if b == nil {
			b = &Stored{Digest: digest}
			out[digest] = b
		}
		if rest == "meta" {
			b.MetaModRevision = kv.ModRevision
		}
		b.ModRevision = max(b.ModRevision, kv.ModRevision)
	}
	return out
}

// DeleteOp deletes every key of the blob.
func (b *Stored) DeleteOp() clientv3.Op {
	hexPart, _ := ParseDigest(b.Digest)
	return clientv3.OpDelete(store.BlobsPrefix+hexPart+"/", clientv3.WithPrefix())
}

// Unchanged holds while the blob is as Inventory saw it: its metadata
// not rewritten (Put rewrites it at every upload), or, for an unfinished
// upload, still not written. Chunks need no comparison: Put writes the
// metadata only if every chunk is still there.
func (b *Stored) Unchanged() clientv3.Cmp {
	hexPart, _ := ParseDigest(b.Digest)
	key := metaKey(hexPart)
	if b.MetaModRevision == 0 {
		return clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	}
	return clientv3.Compare(clientv3.ModRevision(key), "=", b.MetaModRevision)
}

// Present holds while digest's blob is stored. A write that makes a
// record reference a blob includes it, so that it cannot reference a
// blob the collector has just deleted.
func Present(digest string) (clientv3.Cmp, error) {
	hexPart, err := ParseDigest(digest)
	if err != nil {
		return clientv3.Cmp{}, err
	}
	return clientv3.Compare(clientv3.CreateRevision(metaKey(hexPart)), ">", 0), nil
}

// MetaOp reads the blob's metadata record (for Decode).
func (b *Stored) MetaOp() clientv3.Op {
	hexPart, _ := ParseDigest(b.Digest)
	return clientv3.OpGet(metaKey(hexPart))
}
