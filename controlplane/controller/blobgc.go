package controller

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Blob garbage collection (docs/operations.md, "Blob garbage collection").
// Uploaded modules and image archives stay in etcd until nothing can need
// them: a blob is deleted once no workload, instance or kept revision
// names it (module_digest, fallback_archive_digest) and it has stayed so
// for a grace period, which covers the gap between an upload and the
// apply that references it (deploy uploads first; a manifest uploads
// several blobs before applying).
//
// The grace is measured on the leader's own clock from the first pass
// that saw the blob unreferenced, not from BlobMeta.created_unix_nano
// (another member's clock, and the time of the first upload only): every
// upload rewrites the blob's metadata (blobs.Store.Put), which restarts
// the clock, and a new leader starts every clock afresh, which only
// delays deletions.
//
// Races are settled by etcd, not by timing. The collector reads the blobs
// and every record that references one in a single transaction, at
// revision R, and deletes in a transaction that holds only if no
// workload, instance or revision was written after R and each blob's
// metadata is as read (not uploaded again). A workload write, in turn,
// requires the blobs it references to exist (workloads.BlobsPresent): an apply that
// loses to the collector fails and reports the blob as not uploaded,
// rather than creating a workload that can never start.

// Defaults of the collector's settings (Config.BlobGCInterval and
// BlobGCGrace).
const (
	DefaultBlobGCInterval = time.Minute
	DefaultBlobGCGrace    = time.Hour
)

// maxBlobsPerTxn bounds the blobs one deleting transaction names (one
// comparison and one deletion each), under etcd's operation limit.
const maxBlobsPerTxn = store.MaxOpsPerTxn / 4

// BlobCollector deletes unreferenced blobs. It runs only on the elected
// leader and writes through its fence.
type BlobCollector struct {
	st       *store.Store
	cache    *cache.Cache
	kv       clientv3.KV // fenced on this member's leadership
	log      *slog.Logger
	events   *events.Recorder
	metrics  *Metrics
	interval time.Duration
	grace    time.Duration
	now      func() time.Time

	// unreferenced is, by digest, since when this collector has seen each
	// blob unreferenced, and at which of its mod revisions: an upload
	// (a new mod revision) starts the clock again.
	unreferenced map[string]unreferencedMark
}

type unreferencedMark struct {
	modRevision int64
	since       time.Time
}

// Start runs a pass every interval until ctx is done.
func (g *BlobCollector) Start(ctx context.Context) error {
	ticker := time.NewTicker(g.interval)
	defer ticker.Stop()
	for {
		if _, err := g.Pass(ctx); err != nil && ctx.Err() == nil {
			g.log.Warn("blob collection pass failed; the next one tries again", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

// blobRefs is one consistent read of the stored blobs and of the digests
// that records reference.
type blobRefs struct {
	rev        int64
	stored     map[string]*blobs.Stored
	referenced map[string]bool
}

// referencingPrefixes hold the records whose specs name blobs.
var referencingPrefixes = []string{store.WorkloadsPrefix, store.InstancesPrefix, store.RevisionsPrefix}

func (g *BlobCollector) read(ctx context.Context) (*blobRefs, error) {
	// Workloads and instances from the member's cache, the revisions and
	// blobs from etcd at the cache's revision: one consistent view.
	if err := g.cache.Sync(ctx); err != nil {
		return nil, err
	}
	refs := &blobRefs{referenced: map[string]bool{}}
	g.cache.Read(func(r cache.Reader) {
		refs.rev = r.Rev()
		for _, w := range r.Workloads() {
			refs.refer(w.Value.GetSpec())
		}
		var last *v1.WorkloadSpec
		r.EachInstance(func(e cache.Instance) bool {
			if spec := e.Value.GetSpec(); spec != last { // instances share their generation's spec
				refs.refer(spec)
				last = spec
			}
			return true
		})
	})
	resp, err := g.st.Client.Txn(ctx).Then(
		clientv3.OpGet(store.RevisionsPrefix, clientv3.WithPrefix(), clientv3.WithRev(refs.rev)),
		blobs.ListOp(clientv3.WithRev(refs.rev)),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("read blobs and their references: %w", err)
	}
	refs.stored = blobs.Inventory(resp.Responses[1].GetResponseRange().GetKvs())
	// A record that does not decode might reference anything: then
	// nothing is collected.
	for _, kv := range resp.Responses[0].GetResponseRange().GetKvs() {
		rev, err := g.st.Revisions.Decode(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("revision record %s: %w", kv.Key, err)
		}
		refs.refer(rev.GetSpec())
	}
	return refs, nil
}

func (r *blobRefs) refer(spec *v1.WorkloadSpec) {
	for _, d := range workloads.Blobs(spec) {
		r.referenced[d] = true
	}
}

// pass reads the blobs and their references and deletes the blobs that
// have stayed unreferenced for the grace period. It returns how many it
// deleted.
func (g *BlobCollector) Pass(ctx context.Context) (int, error) {
	g.metrics.gcPasses.Inc()
	refs, err := g.read(ctx)
	if err != nil {
		return 0, err
	}
	if g.unreferenced == nil {
		g.unreferenced = map[string]unreferencedMark{}
	}
	now := g.now()
	var due []*blobs.Stored
	stored := 0
	for digest, b := range refs.stored {
		if b.MetaModRevision != 0 {
			stored++
		}
		if refs.referenced[digest] {
			delete(g.unreferenced, digest)
			continue
		}
		mark, seen := g.unreferenced[digest]
		if !seen || mark.modRevision != b.ModRevision {
			g.unreferenced[digest] = unreferencedMark{modRevision: b.ModRevision, since: now}
			continue
		}
		if now.Sub(mark.since) >= g.grace {
			due = append(due, b)
		}
	}
	for digest := range g.unreferenced {
		if refs.stored[digest] == nil {
			delete(g.unreferenced, digest)
		}
	}
	g.metrics.blobsStored.Set(float64(stored))
	sort.Slice(due, func(i, j int) bool { return due[i].Digest < due[j].Digest })
	collected := 0
	for start := 0; start < len(due); start += maxBlobsPerTxn {
		n, err := g.collect(ctx, refs.rev, due[start:min(start+maxBlobsPerTxn, len(due))], now)
		collected += n
		if err != nil {
			return collected, err
		}
	}
	return collected, nil
}

// collect deletes batch if nothing that references blobs has been written
// since rev and no blob of batch has been uploaded again since.
func (g *BlobCollector) collect(ctx context.Context, rev int64, batch []*blobs.Stored, now time.Time) (int, error) {
	// Their metadata, for the log: what was deleted and how big it was.
	reads := make([]clientv3.Op, len(batch))
	for i, b := range batch {
		reads[i] = b.MetaOp()
	}
	metaResp, err := g.st.Client.Txn(ctx).Then(reads...).Commit()
	if err != nil {
		return 0, fmt.Errorf("read the metadata of unreferenced blobs: %w", err)
	}
	var cmps []clientv3.Cmp
	for _, p := range referencingPrefixes {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(p), "<", rev+1).WithPrefix())
	}
	ops := make([]clientv3.Op, 0, len(batch))
	for _, b := range batch {
		cmps = append(cmps, b.Unchanged())
		ops = append(ops, b.DeleteOp())
	}
	resp, err := g.kv.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return 0, fmt.Errorf("delete unreferenced blobs: %w", err)
	}
	if !resp.Succeeded {
		// A workload, instance or revision was written, a blob uploaded
		// again, or leadership lost: the next pass decides afresh.
		g.log.Debug("blob collection lost a race with a write; the next pass looks again", "blobs", len(batch))
		return 0, nil
	}
	for i, b := range batch {
		meta := &v1.BlobMeta{}
		if kvs := metaResp.Responses[i].GetResponseRange().GetKvs(); len(kvs) > 0 {
			_ = proto.Unmarshal(kvs[0].Value, meta) // only for the log
		}
		unreferencedFor := now.Sub(g.unreferenced[b.Digest].since).Round(time.Second)
		delete(g.unreferenced, b.Digest)
		g.metrics.blobsCollected.Inc()
		g.metrics.blobBytes.Add(float64(meta.GetSize()))
		what := "blob"
		if b.MetaModRevision == 0 {
			what = "unfinished upload"
		}
		g.log.Info("collected an unreferenced "+what, "digest", b.Digest, "bytes", meta.GetSize(),
			"mediaType", meta.GetMediaType(), "unreferencedFor", unreferencedFor.String())
		if g.events != nil {
			if err := g.events.Record(context.WithoutCancel(ctx), "blob/"+b.Digest, "BlobCollected",
				"%s of %d bytes deleted: no workload, instance or kept revision had referenced it for %s", what, meta.GetSize(), unreferencedFor); err != nil {
				g.log.Debug("recording an event failed", "blob", b.Digest, "err", err)
			}
		}
	}
	return len(batch), nil
}
