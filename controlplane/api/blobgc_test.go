package api

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/controller"
	"go.etcd.io/etcd/client/v3/concurrency"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// The blob collector's tests run a real member (embedded etcd) that is
// not started: no leader loop runs, and each test drives one collector
// pass at a time on a clock of its own.

const testGrace = time.Hour

// gcServer is a member, its Control API, and a collector whose clock the
// test moves.
type gcServer struct {
	s     *Server
	api   *controlAPI
	gc    *controller.BlobCollector
	hook  *hookKV // what gc writes through: the store's client, and a hook
	clock time.Time
}

func newGCServer(t *testing.T, revisionLimit int) *gcServer {
	t.Helper()
	s := newTestServer(t, func(cfg *Config) { cfg.RevisionHistoryLimit = revisionLimit })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.cache.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	g := &gcServer{s: s, api: &controlAPI{s: s}, clock: time.Unix(1_000_000, 0)}
	g.hook = &hookKV{KV: s.store.Client}
	g.gc = g.collector(g.hook)
	return g
}

// collector is a collector on the test's clock writing through kv.
func (g *gcServer) collector(kv clientv3.KV) *controller.BlobCollector {
	c := controller.NewBlobCollector(controller.Config{Store: g.s.store, Cache: g.s.cache, KV: kv, Events: g.s.events,
		Metrics: controller.NewMetrics(prometheus.NewRegistry()), BlobGCInterval: time.Minute, BlobGCGrace: testGrace})
	c.SetClock(func() time.Time { return g.clock })
	return c
}

func (g *gcServer) pass(t *testing.T) int {
	t.Helper()
	n, err := g.gc.Pass(context.Background())
	if err != nil {
		t.Fatalf("collector pass: %v", err)
	}
	return n
}

// upload stores a module, as UploadBlob does, and returns its digest.
func (g *gcServer) upload(t *testing.T, module []byte) string {
	t.Helper()
	d := blobs.Digest(module)
	if _, err := g.s.blobs.Put(context.Background(), d, bytes.NewReader(module), int64(len(module)), blobs.Meta{MediaType: "application/wasm", WasmMinMemoryBytes: wasmPageSize}); err != nil {
		t.Fatal(err)
	}
	return d
}

func (g *gcServer) apply(name, digest string) error {
	_, err := g.api.ApplyWorkload(context.Background(), &v1.ApplyWorkloadRequest{Name: name,
		Spec: &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 1}})
	return err
}

func (g *gcServer) stored(t *testing.T, digest string) bool {
	t.Helper()
	_, err := g.s.blobs.Stat(context.Background(), digest)
	if err != nil && !errdefs.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

// testModules are distinct modules: blobs with different digests.
func testModules(t *testing.T, names ...string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, n := range names {
		b, err := os.ReadFile("../../testdata/" + n)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// keysOutsideBlobs maps every key but the blobs' and the events' to its
// mod revision.
func keysOutsideBlobs(t *testing.T, cli *clientv3.Client) map[string]int64 {
	t.Helper()
	resp, err := cli.Get(context.Background(), "", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, kv := range resp.Kvs {
		k := string(kv.Key)
		if !strings.HasPrefix(k, store.BlobsPrefix) && !strings.HasPrefix(k, store.EventsPrefix) {
			out[k] = kv.ModRevision
		}
	}
	return out
}

// TestBlobGCKeepsKeptRevisionsBlobsAndCollectsDroppedOnes: a module only
// a kept revision names survives any number of passes; once its revision
// falls out of the history limit it goes, after the grace period and
// not before, and nothing else is touched.
func TestBlobGCKeepsKeptRevisionsBlobsAndCollectsDroppedOnes(t *testing.T) {
	g := newGCServer(t, 2)
	ctx := context.Background()
	mods := testModules(t, "hello.wasm", "ticker.wasm", "fail.wasm")
	a, b, c := g.upload(t, mods[0]), g.upload(t, mods[1]), g.upload(t, mods[2])
	for _, d := range []string{a, b} {
		if err := g.apply("w", d); err != nil {
			t.Fatal(err)
		}
	}
	// a is now named by revision 1 alone (no instance exists: no
	// controller runs); c by nothing yet.
	collected := 0
	for range 3 {
		collected += g.pass(t)
		g.clock = g.clock.Add(testGrace)
	}
	if collected != 1 {
		t.Fatalf("passes over three grace periods collected %d blobs, want 1 (the unapplied upload)", collected)
	}
	if !g.stored(t, a) || !g.stored(t, b) {
		t.Fatal("a blob that a kept revision or the workload names was collected")
	}
	if g.stored(t, c) {
		t.Fatal("an upload unreferenced for longer than the grace period was kept")
	}

	c = g.upload(t, mods[2])
	if err := g.apply("w", c); err != nil { // generation 3: revision 1 goes
		t.Fatal(err)
	}
	revs, err := workloads.ListRevisions(ctx, g.s.store, "w")
	if err != nil || len(revs) != 2 || revs[0].GetGeneration() != 2 {
		t.Fatalf("revisions = %v, %v; want generations 2 and 3", revs, err)
	}
	before := keysOutsideBlobs(t, g.s.store.Client)
	if n := g.pass(t); n != 0 {
		t.Fatalf("the first pass to see the blob unreferenced collected %d", n)
	}
	g.clock = g.clock.Add(testGrace - time.Second)
	if n := g.pass(t); n != 0 || !g.stored(t, a) {
		t.Fatalf("collected %d blobs before the grace period had passed", n)
	}
	g.clock = g.clock.Add(time.Second)
	if n := g.pass(t); n != 1 {
		t.Fatalf("collected %d blobs, want 1 (the module of the dropped revision)", n)
	}
	if g.stored(t, a) || !g.stored(t, b) || !g.stored(t, c) {
		t.Fatalf("stored after collection: a=%v b=%v c=%v; want only b and c", g.stored(t, a), g.stored(t, b), g.stored(t, c))
	}
	hexA, _ := blobs.ParseDigest(a)
	if resp, err := g.s.store.Client.Get(ctx, store.BlobsPrefix+hexA, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil || resp.Count != 0 {
		t.Fatalf("keys of the collected blob left: %v, %v", resp, err)
	}
	after := keysOutsideBlobs(t, g.s.store.Client)
	if len(after) != len(before) {
		t.Fatalf("keys outside the blobs: %d before collecting, %d after", len(before), len(after))
	}
	for k, rev := range before {
		if after[k] != rev {
			t.Errorf("key %s changed while collecting (mod revision %d, then %d)", k, rev, after[k])
		}
	}
	evs, err := g.s.events.List(ctx, "blob/"+a)
	if err != nil || len(evs) != 1 || evs[0].GetReason() != "BlobCollected" {
		t.Fatalf("events of the collected blob = %v, %v; want one BlobCollected", evs, err)
	}
	if _, err := g.api.RollbackWorkload(ctx, &v1.RollbackRequest{Workload: "w", ToGeneration: 2}); err != nil {
		t.Fatalf("rolling back to a kept revision after collecting: %v", err)
	}
}

// TestBlobGCKeepsAnUploadForTheGraceAfterEachUpload: a module uploaded but
// not applied yet survives for the grace period, which every upload of
// the same bytes starts again, as does a new leader.
func TestBlobGCKeepsAnUploadForTheGraceAfterEachUpload(t *testing.T) {
	g := newGCServer(t, 0)
	d := g.upload(t, testModules(t, "hello.wasm")[0])
	g.pass(t)
	g.clock = g.clock.Add(testGrace - time.Second)
	if n := g.pass(t); n != 0 {
		t.Fatalf("collected %d blobs within the grace period", n)
	}
	g.upload(t, testModules(t, "hello.wasm")[0]) // deploy again: stored already
	g.clock = g.clock.Add(time.Second)
	if n := g.pass(t); n != 0 || !g.stored(t, d) {
		t.Fatalf("collected %d blobs although the module was uploaded again within the grace", n)
	}
	// A new leader knows nothing of the previous one's clocks.
	g.gc = g.collector(g.s.store.Client)
	g.clock = g.clock.Add(testGrace)
	if n := g.pass(t); n != 0 {
		t.Fatalf("a new leader's first pass collected %d blobs", n)
	}
	g.clock = g.clock.Add(testGrace)
	if n := g.pass(t); n != 1 || g.stored(t, d) {
		t.Fatalf("collected %d blobs, want the upload that stayed unapplied for the grace", n)
	}
	if err := g.apply("w", d); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "upload it first") {
		t.Fatalf("applying a collected module: %v; want FailedPrecondition telling to upload it", err)
	}
}

// hookKV runs before (once) when a transaction is begun: to write
// between a collector's read and its delete.
type hookKV struct {
	clientv3.KV
	before func()
}

func (h *hookKV) Txn(ctx context.Context) clientv3.Txn {
	if f := h.before; f != nil {
		h.before = nil
		f()
	}
	return h.KV.Txn(ctx)
}

// afterGetKV runs after (once) when a read of key has returned: to
// collect between ApplyWorkload's check of a blob and its write.
type afterGetKV struct {
	clientv3.KV
	key   string
	after func()
}

func (h *afterGetKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	resp, err := h.KV.Get(ctx, key, opts...)
	if f := h.after; f != nil && key == h.key {
		h.after = nil
		f()
	}
	return resp, err
}

// TestBlobGCRacingDeploy: an upload or an apply and the collector
// deciding about the same blob at the same time end either with the
// blob there (and the workload), or with the apply refused as naming a
// blob not uploaded; never with a workload whose blob is gone.
func TestBlobGCRacingDeploy(t *testing.T) {
	ctx := context.Background()
	t.Run("upload again between the collector's read and its delete", func(t *testing.T) {
		g := newGCServer(t, 0)
		module := testModules(t, "hello.wasm")[0]
		d := g.upload(t, module)
		g.pass(t)
		g.clock = g.clock.Add(testGrace)
		g.hook.before = func() { g.upload(t, module) }
		if n := g.pass(t); n != 0 || !g.stored(t, d) {
			t.Fatalf("collected %d blobs, one of them uploaded again meanwhile", n)
		}
		if err := g.apply("w", d); err != nil {
			t.Fatalf("apply after the upload: %v", err)
		}
	})
	t.Run("apply between the collector's read and its delete", func(t *testing.T) {
		g := newGCServer(t, 0)
		d := g.upload(t, testModules(t, "hello.wasm")[0])
		g.pass(t)
		g.clock = g.clock.Add(testGrace)
		var applied error
		g.hook.before = func() { applied = g.apply("w", d) }
		if n := g.pass(t); n != 0 {
			t.Fatalf("collected %d blobs although a workload was applied meanwhile", n)
		}
		if applied != nil {
			t.Fatalf("apply: %v", applied)
		}
		if !g.stored(t, d) {
			t.Fatal("the workload's module is gone")
		}
		g.clock = g.clock.Add(testGrace)
		if n := g.pass(t); n != 0 || !g.stored(t, d) {
			t.Fatalf("collected %d blobs of which one a workload runs", n)
		}
	})
	t.Run("collection between the apply's check and its write", func(t *testing.T) {
		g := newGCServer(t, 0)
		module := testModules(t, "hello.wasm")[0]
		d := g.upload(t, module)
		g.pass(t)
		g.clock = g.clock.Add(testGrace)
		hexPart, _ := blobs.ParseDigest(d)
		collected := 0
		g.s.blobs = blobs.New(&afterGetKV{KV: g.s.store.Client, key: store.BlobsPrefix + hexPart + "/meta",
			after: func() { collected = g.pass(t) }})
		err := g.apply("w", d)
		if collected != 1 {
			t.Fatalf("the collector collected %d blobs in the window, want 1", collected)
		}
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "has not been uploaded") {
			t.Fatalf("apply after its module was collected: %v; want FailedPrecondition saying it is not uploaded", err)
		}
		if _, err := g.s.store.Workloads.Get(ctx, "w"); !errdefs.IsNotFound(err) {
			t.Fatalf("a workload was written for a collected module: %v", err)
		}
		g.upload(t, module)
		if err := g.apply("w", d); err != nil {
			t.Fatalf("apply after uploading again: %v", err)
		}
	})
}

// TestBlobGCCollectsAnUnfinishedUploadAndPutSurvivesIt: chunks without
// metadata (an upload that died) are collected like an unreferenced blob,
// and an upload whose chunks the collector deletes while it writes them
// writes them again rather than store a blob with holes.
func TestBlobGCCollectsAnUnfinishedUploadAndPutSurvivesIt(t *testing.T) {
	g := newGCServer(t, 0)
	ctx := context.Background()
	module := testModules(t, "gohello.wasm")[0] // several chunks
	d := blobs.Digest(module)
	hexPart, _ := blobs.ParseDigest(d)
	chunk0 := store.BlobsPrefix + hexPart + "/chunk/000000"
	if _, err := g.s.store.Client.Put(ctx, chunk0, string(module[:blobs.ChunkSize])); err != nil {
		t.Fatal(err)
	}
	g.pass(t)
	g.clock = g.clock.Add(testGrace)
	if n := g.pass(t); n != 1 {
		t.Fatalf("collected %d, want the unfinished upload", n)
	}
	if resp, err := g.s.store.Client.Get(ctx, chunk0); err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("the unfinished upload's chunk is still there: %v", err)
	}

	// The first metadata write finds chunk 0 deleted (as by a collector
	// that saw the chunks unfinished for its whole grace period).
	put := blobs.New(&hookKV{KV: g.s.store.Client, before: func() {
		if _, err := g.s.store.Client.Delete(ctx, chunk0); err != nil {
			t.Error(err)
		}
	}})
	if _, err := put.Put(ctx, d, bytes.NewReader(module), int64(len(module)), blobs.Meta{MediaType: "application/wasm", WasmMinMemoryBytes: wasmPageSize}); err != nil {
		t.Fatal(err)
	}
	got, err := g.s.blobs.Read(ctx, d)
	if err != nil || len(got) != len(module) {
		t.Fatalf("reading the blob back: %d bytes, %v; want %d bytes", len(got), err, len(module))
	}
}

// TestBlobGCWritesThroughTheFence: a collector whose member no longer
// leads deletes nothing.
func TestBlobGCWritesThroughTheFence(t *testing.T) {
	g := newGCServer(t, 0)
	ctx := context.Background()
	d := g.upload(t, testModules(t, "hello.wasm")[0])
	sess, err := concurrency.NewSession(g.s.store.Client, concurrency.WithTTL(5))
	if err != nil {
		t.Fatal(err)
	}
	el := concurrency.NewElection(sess, store.ElectionPrefix)
	if err := el.Campaign(ctx, "me"); err != nil {
		t.Fatal(err)
	}
	g.gc = g.collector(store.Fenced(g.s.store.Client, el))
	g.pass(t)
	g.clock = g.clock.Add(testGrace)
	if _, err := g.s.store.Client.Revoke(ctx, sess.Lease()); err != nil { // deposed
		t.Fatal(err)
	}
	if n := g.pass(t); n != 0 || !g.stored(t, d) {
		t.Fatalf("a deposed leader's collector deleted %d blobs", n)
	}
}
