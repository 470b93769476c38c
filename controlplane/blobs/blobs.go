// Package blobs is the control plane's content-addressed store for module
// bytes (and later image archives). A blob is kept in etcd, so it replicates
// with the cluster: its bytes in chunks under etcd's request-size limit and a
// metadata record written last, so that a reader never sees half a blob.
// Blobs are named by sha256 and stored once however often they are uploaded.
package blobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// ChunkSize is the size of each stored piece, under etcd's request limit.
const ChunkSize = 1 << 20

// Sizes of blobs. A member takes uploads up to its configured limit
// (DefaultMaxUpload unless told otherwise), which can be raised to MaxSize
// at most: every blob is kept whole in etcd, on every member.
const (
	DefaultMaxUpload = 128 << 20
	MaxSize          = 1 << 30
)

// Store keeps blobs in etcd.
type Store struct {
	kv clientv3.KV
}

// New returns a blob store over an etcd client.
func New(kv clientv3.KV) *Store { return &Store{kv: kv} }

// ParseDigest checks a "sha256:<64 hex>" digest and returns its hex part.
func ParseDigest(digest string) (string, error) {
	hexPart, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hexPart) != 64 {
		return "", errdefs.Invalidf("digest %q is not of the form sha256:<64 hex digits>", digest)
	}
	if _, err := hex.DecodeString(hexPart); err != nil || strings.ToLower(hexPart) != hexPart {
		return "", errdefs.Invalidf("digest %q is not of the form sha256:<64 lowercase hex digits>", digest)
	}
	return hexPart, nil
}

// Digest returns the digest of b.
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func metaKey(hexPart string) string { return store.BlobsPrefix + hexPart + "/meta" }
func chunkKey(hexPart string, i int) string {
	return fmt.Sprintf("%s%s/chunk/%06d", store.BlobsPrefix, hexPart, i)
}

// Stat returns a blob's metadata, or ErrNotFound.
func (s *Store) Stat(ctx context.Context, digest string) (*v1.BlobMeta, error) {
	hexPart, err := ParseDigest(digest)
	if err != nil {
		return nil, err
	}
	resp, err := s.kv.Get(ctx, metaKey(hexPart))
	if err != nil {
		return nil, fmt.Errorf("%w: read blob %s: %w", errdefs.ErrUnavailable, digest, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, errdefs.NotFoundf("blob %s not found", digest)
	}
	meta := &v1.BlobMeta{}
	if err := proto.Unmarshal(resp.Kvs[0].Value, meta); err != nil {
		return nil, fmt.Errorf("blob %s: corrupt metadata: %w", digest, err)
	}
	return meta, nil
}

// Meta is what the store records about a blob beside its bytes: its
// media type and, for a module, its initial memory, why the wasm runtime
// cannot run it ("" when it can) and, when ImportsRead, whether it
// imports sock_accept (services).
type Meta struct {
	MediaType              string
	WasmMinMemoryBytes     int64
	WasmUnsupported        string
	ImportsRead            bool
	WasmAcceptsConnections bool
}

// Put stores the size bytes of content under digest, chunk by chunk (its
// memory is one chunk whatever the size), and fails without writing the
// metadata if they do not hash to digest. It reports whether the blob was
// already stored (deduplicated); its metadata record is then rewritten
// unchanged (Touch), which restarts its grace period with the collector
// (controller/blobgc.go).
func (s *Store) Put(ctx context.Context, digest string, content io.ReaderAt, size int64, m Meta) (existed bool, err error) {
	hexPart, err := ParseDigest(digest)
	if err != nil {
		return false, err
	}
	if size < 0 || size > MaxSize {
		return false, errdefs.Invalidf("blob of %d bytes is outside 0..%d bytes", size, MaxSize)
	}
	// Each attempt loses only to the collector deleting the blob at that
	// moment; three in a row mean something else is wrong.
	for range 3 {
		if touched, err := s.Touch(ctx, digest); err != nil || touched {
			return touched, err
		}
		stored, err := s.write(ctx, hexPart, content, size, m)
		if err != nil || stored {
			return false, err
		}
	}
	return false, errdefs.Unavailablef("store blob %s: its chunks kept disappearing while they were written; try again", digest)
}

// Touch rewrites a blob's metadata unchanged if it is stored, and says
// whether it did: an upload of bytes already stored needs nothing else.
func (s *Store) Touch(ctx context.Context, digest string) (bool, error) {
	hexPart, err := ParseDigest(digest)
	if err != nil {
		return false, err
	}
	key := metaKey(hexPart)
	resp, err := s.kv.Get(ctx, key)
	if err != nil {
		return false, fmt.Errorf("%w: read blob sha256:%s: %w", errdefs.ErrUnavailable, hexPart, err)
	}
	if len(resp.Kvs) == 0 {
		return false, nil
	}
	kv := resp.Kvs[0]
	txn, err := s.kv.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).
		Then(clientv3.OpPut(key, string(kv.Value))).Commit()
	if err != nil {
		return false, fmt.Errorf("%w: store blob sha256:%s metadata: %w", errdefs.ErrUnavailable, hexPart, err)
	}
	return txn.Succeeded, nil // else it was just collected (or touched): look again
}

// write stores the chunks, then the metadata if every chunk is still
// there. It reports false when a chunk is missing: the collector deleted
// an unfinished upload's chunks (it never deletes a blob with
// metadata that is referenced or was written within its grace period).
// Concurrent uploads of the same bytes write the same chunks; the first
// metadata write wins and the second finds it.
func (s *Store) write(ctx context.Context, hexPart string, content io.ReaderAt, size int64, m Meta) (bool, error) {
	digest := "sha256:" + hexPart
	sum := sha256.New()
	buf := make([]byte, min(ChunkSize, size))
	chunks := 0
	for off := int64(0); off < size || chunks == 0; off += ChunkSize {
		n := min(ChunkSize, size-off)
		if _, err := content.ReadAt(buf[:n], off); err != nil && !(errors.Is(err, io.EOF) && n == 0) {
			return false, fmt.Errorf("store blob %s: reading its bytes: %w", digest, err)
		}
		sum.Write(buf[:n])
		if _, err := s.kv.Put(ctx, chunkKey(hexPart, chunks), string(buf[:n])); err != nil {
			return false, fmt.Errorf("%w: store blob %s chunk %d: %w", errdefs.ErrUnavailable, digest, chunks, err)
		}
		chunks++
	}
	if got := "sha256:" + hex.EncodeToString(sum.Sum(nil)); got != digest {
		// The chunks stay until the collector takes them as an
		// unfinished upload.
		return false, errdefs.Invalidf("digest mismatch: expected %s, the uploaded bytes hash to %s", digest, got)
	}
	meta, err := proto.Marshal(&v1.BlobMeta{
		Digest: digest, Size: size, Chunks: int32(chunks), ChunkSize: ChunkSize,
		MediaType: m.MediaType, CreatedUnixNano: time.Now().UnixNano(), WasmMinMemoryBytes: m.WasmMinMemoryBytes,
		WasmUnsupported: m.WasmUnsupported, WasmImportsRead: m.ImportsRead, WasmAcceptsConnections: m.WasmAcceptsConnections,
	})
	if err != nil {
		return false, err
	}
	key := metaKey(hexPart)
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}
	for i := range chunks {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(chunkKey(hexPart, i)), ">", 0))
	}
	resp, err := s.kv.Txn(ctx).If(cmps...).Then(clientv3.OpPut(key, string(meta))).Else(clientv3.OpGet(key, clientv3.WithCountOnly())).Commit()
	if err != nil {
		return false, fmt.Errorf("%w: store blob %s metadata: %w", errdefs.ErrUnavailable, digest, err)
	}
	if resp.Succeeded {
		return true, nil
	}
	return resp.Responses[0].GetResponseRange().GetCount() > 0, nil // another upload finished it
}

// WriteTo streams the blob's bytes to w, chunk by chunk.
func (s *Store) WriteTo(ctx context.Context, digest string, w func(chunk []byte, size int64) error) error {
	meta, err := s.Stat(ctx, digest)
	if err != nil {
		return err
	}
	hexPart, _ := ParseDigest(digest)
	for i := 0; i < int(meta.GetChunks()); i++ {
		resp, err := s.kv.Get(ctx, chunkKey(hexPart, i))
		if err != nil {
			return fmt.Errorf("%w: read blob %s chunk %d: %w", errdefs.ErrUnavailable, digest, i, err)
		}
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("blob %s is missing chunk %d of %d", digest, i, meta.GetChunks())
		}
		if err := w(resp.Kvs[0].Value, meta.GetSize()); err != nil {
			return err
		}
	}
	return nil
}

// Read returns the whole blob.
func (s *Store) Read(ctx context.Context, digest string) ([]byte, error) {
	var out []byte
	err := s.WriteTo(ctx, digest, func(chunk []byte, size int64) error {
		if out == nil {
			out = make([]byte, 0, size)
		}
		out = append(out, chunk...)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if got := Digest(out); got != digest {
		return nil, fmt.Errorf("blob %s is corrupt in the store: its bytes hash to %s", digest, got)
	}
	return out, nil
}
