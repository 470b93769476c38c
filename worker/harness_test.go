package worker

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/wasmrt"
	"github.com/wasmorch/wasmorch/worker/internal/fakert"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// ---------------------------------------------------------------- fake control plane

// fakeCP implements the Agent service the way the control plane must: each
// Session stream gets the full desired set (or, resuming from a revision
// it still keeps, what changed since), then what changes: deltas for a
// worker that asks for them, full sets otherwise. Its revisions start
// above those of every fakeCP made before it, as a new member's history
// starts after the revisions a worker heard from an older one.
type fakeCP struct {
	pb.UnimplementedAgentServer
	heartbeatMs int64
	graceMs     int64         // the node's grace it gives; 0: 3 heartbeats
	stalled     chan struct{} // while not nil and open, heartbeats get no answer

	mu         sync.Mutex
	nodes      []*pb.Node
	heartbeats int
	conditions []*pb.NodeCondition // of the latest heartbeat
	sessions   int
	requests   []*pb.SessionRequest
	sent       []*pb.Assignments // every message sent, in order
	reports    []*pb.StatusBatch
	latest     map[string]*pb.InstanceStatus
	blobs      map[string][]byte
	fetches    int
	desired    map[string]*pb.Instance
	floor      int64         // the revision its history starts after
	rev        int64         // of the latest change
	history    []fakeChange  // every change after floor
	changed    chan struct{} // closed when desired changes
	// edge: the node's local functions, the revision they last changed
	// at, and the local function each blob fetch named (localcold.go).
	local      []*pb.LocalFunction
	localRev   int64
	fetchedFor []string
}

// fakeChange says that instance id changed (or left the set) at rev.
type fakeChange struct {
	rev int64
	id  string
}

var fakeCPs atomic.Int64

func newFakeCP() *fakeCP {
	floor := fakeCPs.Add(1) * 1_000_000
	return &fakeCP{
		heartbeatMs: 20,
		latest:      map[string]*pb.InstanceStatus{},
		blobs:       map[string][]byte{testDigest: testModule},
		desired:     map[string]*pb.Instance{},
		floor:       floor,
		rev:         floor,
		changed:     make(chan struct{}),
	}
}

func (f *fakeCP) Register(_ context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nodes = append(f.nodes, req.GetNode())
	grace := cmp.Or(f.graceMs, 3*f.heartbeatMs)
	return &pb.RegisterResponse{HeartbeatIntervalMs: f.heartbeatMs, NodeGraceMs: grace}, nil
}

func (f *fakeCP) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	f.mu.Lock()
	stalled := f.stalled
	f.mu.Unlock()
	if stalled != nil {
		select {
		case <-stalled:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heartbeats++
	f.conditions = req.GetConditions()
	return &pb.HeartbeatResponse{}, nil
}

// heartbeatConditions are the conditions of the latest heartbeat.
func (f *fakeCP) heartbeatConditions() []*pb.NodeCondition {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conditions
}

func (f *fakeCP) Session(req *pb.SessionRequest, stream grpc.ServerStreamingServer[pb.Assignments]) error {
	f.mu.Lock()
	f.sessions++
	f.requests = append(f.requests, req)
	var msg *pb.Assignments
	since := req.GetResumeRevision()
	if req.GetDeltas() && since >= f.floor && since <= f.rev {
		msg = f.deltaLocked(since)
	} else {
		msg = f.fullLocked()
	}
	f.mu.Unlock()
	for {
		if msg != nil {
			if err := stream.Send(msg); err != nil {
				return err
			}
			f.mu.Lock()
			f.sent = append(f.sent, msg)
			f.mu.Unlock()
			since = msg.GetRevision()
		}
		f.mu.Lock()
		changed := f.changed
		msg = nil
		if f.rev > since {
			if req.GetDeltas() {
				msg = f.deltaLocked(since)
			} else {
				msg = f.fullLocked()
			}
		}
		f.mu.Unlock()
		if msg != nil {
			continue
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (f *fakeCP) fullLocked() *pb.Assignments {
	a := &pb.Assignments{Full: true, Revision: f.rev, LocalFunctionsFull: true, LocalFunctions: f.local}
	for _, id := range slices.Sorted(maps.Keys(f.desired)) {
		a.Instances = append(a.Instances, f.desired[id])
	}
	return a
}

// deltaLocked is what changed after since.
func (f *fakeCP) deltaLocked(since int64) *pb.Assignments {
	a := &pb.Assignments{Revision: f.rev}
	if f.localRev > since {
		a.LocalFunctionsFull, a.LocalFunctions = true, f.local
	}
	seen := map[string]bool{}
	for _, c := range f.history {
		if c.rev <= since || seen[c.id] {
			continue
		}
		seen[c.id] = true
		if rec, ok := f.desired[c.id]; ok {
			a.Instances = append(a.Instances, rec)
		} else {
			a.Removed = append(a.Removed, c.id)
		}
	}
	return a
}

func (f *fakeCP) ReportStatus(_ context.Context, b *pb.StatusBatch) (*pb.StatusAck, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, b)
	for _, st := range b.GetStatuses() {
		f.latest[st.GetId()] = st
	}
	return &pb.StatusAck{}, nil
}

func (f *fakeCP) FetchBlob(req *pb.FetchBlobRequest, stream grpc.ServerStreamingServer[pb.BlobChunk]) error {
	f.mu.Lock()
	f.fetches++
	f.fetchedFor = append(f.fetchedFor, req.GetLocalFunction())
	b, ok := f.blobs[req.GetDigest()]
	f.mu.Unlock()
	if !ok {
		return grpcNotFound(req.GetDigest())
	}
	chunk := max(7, len(b)/64) // Several chunks even for a tiny test module; not thousands for a real one.
	for off := 0; off < len(b) || off == 0; off += chunk {
		c := &pb.BlobChunk{Data: b[off:min(off+chunk, len(b))]}
		if off == 0 {
			c.Size = int64(len(b))
		}
		if err := stream.Send(c); err != nil {
			return err
		}
	}
	return nil
}

func grpcNotFound(digest string) error {
	return status.Errorf(codes.NotFound, "blob %s not found", digest)
}

// setDesired makes instances the node's desired set, as one change.
func (f *fakeCP) setDesired(instances ...*pb.Instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	next := map[string]*pb.Instance{}
	for _, rec := range instances {
		next[rec.GetId()] = rec
		if old, ok := f.desired[rec.GetId()]; !ok || !proto.Equal(old, rec) {
			f.history = append(f.history, fakeChange{f.rev, rec.GetId()})
		}
	}
	for id := range f.desired {
		if _, ok := next[id]; !ok {
			f.history = append(f.history, fakeChange{f.rev, id})
		}
	}
	f.desired = next
	close(f.changed)
	f.changed = make(chan struct{})
}

// setLocal makes fns the node's local functions, as one change.
func (f *fakeCP) setLocal(fns ...*pb.LocalFunction) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	f.local, f.localRev = fns, f.rev
	close(f.changed)
	f.changed = make(chan struct{})
}

// forgetHistory makes the fake keep no change made so far: a session
// resuming from before now gets a full set.
func (f *fakeCP) forgetHistory() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.history, f.floor = nil, f.rev
}

// sessionRequests returns the session requests received, in order.
func (f *fakeCP) sessionRequests() []*pb.SessionRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

// sentMessages returns the session messages sent, in order.
func (f *fakeCP) sentMessages() []*pb.Assignments {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sent)
}

func (f *fakeCP) status(id string) *pb.InstanceStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.latest[id]
}

func (f *fakeCP) reportCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reports)
}

func (f *fakeCP) reportsCopy() []*pb.StatusBatch {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*pb.StatusBatch(nil), f.reports...)
}

func (f *fakeCP) registrations() []*pb.Node {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*pb.Node(nil), f.nodes...)
}

// serveCP serves cp on addr ("" picks a free port) until stop is called.
func serveCP(t *testing.T, cp *fakeCP, addr string) (string, func()) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(memberServerCreds(t)))
	pb.RegisterAgentServer(srv, cp)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			srv.Stop()
			<-done
		})
	}
	t.Cleanup(stop)
	return lis.Addr().String(), stop
}

// ---------------------------------------------------------------- fake clock

type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c  *fakeClock
	at time.Time
	d  time.Duration
	f  func()
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Unix(1_700_000_000, 0)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.now.Add(d), d: d, f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	for i, x := range t.c.timers {
		if x == t {
			t.c.timers = append(t.c.timers[:i], t.c.timers[i+1:]...)
			return true
		}
	}
	return false
}

// Advance moves time on and runs the timers that fall due, in order.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	var due, keep []*fakeTimer
	for _, t := range c.timers {
		if !t.at.After(c.now) {
			due = append(due, t)
		} else {
			keep = append(keep, t)
		}
	}
	c.timers = keep
	c.mu.Unlock()
	sort.SliceStable(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, t := range due {
		t.f()
	}
}

// Pending returns the durations the pending timers were set for.
func (c *fakeClock) Pending() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ds []time.Duration
	for _, t := range c.timers {
		ds = append(ds, t.d)
	}
	return ds
}

func (c *fakeClock) hasPending(d time.Duration) bool {
	for _, p := range c.Pending() {
		if p == d {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------- harness

var (
	testModule = []byte("\x00asm\x01\x00\x00\x00 a fake module")
	testDigest = digestOf(testModule)
)

// readTestdata reads testdata/name, with its digest.
func readTestdata(t *testing.T, name string) ([]byte, string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b, digestOf(b)
}

// newWasmRuntime is a wasm runtime with a compile cache of its own, closed
// when the test ends.
func newWasmRuntime(t *testing.T) *wasmrt.Runtime {
	t.Helper()
	rt, err := wasmrt.New(context.Background(), wasmrt.Config{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Close(context.Background()) })
	return rt
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func rec(id string, policy pb.RestartPolicy) *pb.Instance {
	return &pb.Instance{
		Id:         id,
		Workload:   "hello",
		Generation: 1,
		Node:       "node-a",
		Spec:       &pb.WorkloadSpec{Kind: "wasm", ModuleDigest: testDigest, Restart: policy},
	}
}

type env struct {
	t      *testing.T
	cp     *fakeCP
	cpAddr string
	stopCP func()
	rt     *fakert.Runtime
	w      *Worker
	clock  *fakeClock // nil when the worker runs on real time
	cancel context.CancelFunc
	done   chan error
}

type envOptions struct {
	fakeTime bool
	config   func(*Config)
	worker   func(*Worker)
	// cp, when set, edits the fake control plane before the worker starts.
	cp func(*fakeCP)
	// expiredCredential gives the worker a certificate that has expired.
	expiredCredential bool
}

func startEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	e := &env{t: t, cp: newFakeCP(), rt: fakert.New("wasm")}
	if o.cp != nil {
		o.cp(e.cp)
	}
	e.cpAddr, e.stopCP = serveCP(t, e.cp, "")
	cfg := Config{
		NodeName:            "node-a",
		DataDir:             t.TempDir(),
		Servers:             []string{e.cpAddr},
		ListenAddr:          "127.0.0.1:0",
		MemoryBytes:         4 << 40, // room for 20,000 instances at the default 128 MiB
		StatusBatchInterval: 5 * time.Millisecond,
		Runtimes:            []runtimeapi.Runtime{e.rt},
		Logger:              slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if o.config != nil {
		o.config(&cfg)
	}
	if o.expiredCredential {
		giveExpiredNodeCredential(t, cfg.DataDir, cfg.NodeName)
	} else {
		giveNodeCredential(t, cfg.DataDir, cfg.NodeName)
	}
	w, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.w = w
	w.reconnectBase, w.reconnectMax = 5*time.Millisecond, 50*time.Millisecond
	w.backoffBase = time.Millisecond
	w.stopGrace = time.Second
	if o.fakeTime {
		e.clock = newFakeClock()
		w.clock = e.clock
		w.backoffBase = defaultBackoff
	}
	if o.worker != nil {
		o.worker(w)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	e.done = make(chan error, 1)
	go func() { e.done <- w.Start(ctx) }()
	t.Cleanup(func() { e.stop() })
	return e
}

// stop shuts the worker down and returns what Start returned.
func (e *env) stop() error {
	e.cancel()
	select {
	case err, ok := <-e.done:
		if ok {
			close(e.done)
		}
		return err
	case <-time.After(30 * time.Second):
		e.t.Fatal("worker did not stop")
		return nil
	}
}

// eventually polls cond until it holds, failing the test after a generous
// deadline (a hang guard, not a performance assertion).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// inspect runs f on the worker's record of instance id (nil if none).
func (e *env) inspect(id string, f func(in *instance)) {
	e.w.mu.Lock()
	in := e.w.instances[id]
	e.w.mu.Unlock()
	if in == nil {
		f(nil)
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	f(in)
}

// workerStatus is the worker's latest status of id, or nil.
func (e *env) workerStatus(id string) *pb.InstanceStatus {
	var st *pb.InstanceStatus
	e.inspect(id, func(in *instance) {
		if in != nil {
			st = in.status
		}
	})
	return st
}

// waitRunning waits until the worker has fully recorded a run of id.
func (e *env) waitRunning(id string) *fakert.Instance {
	e.t.Helper()
	eventually(e.t, id+" running", func() bool {
		ok := false
		e.inspect(id, func(in *instance) { ok = in != nil && in.run != nil && !in.busy })
		return ok
	})
	return e.rt.Latest(id)
}

// idle reports whether id has no start queued, in progress or scheduled.
func (e *env) idle(id string) bool {
	ok := false
	e.inspect(id, func(in *instance) {
		ok = in != nil && !in.queued && !in.busy && in.timer == nil && in.run == nil
	})
	return ok
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
