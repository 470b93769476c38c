// Package integration holds the second test tier: a real control plane
// (embedded etcd), a real worker and the real wazero runtime in one process,
// wired over loopback gRPC exactly as `wasmorch up` wires them.
package integration

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/wasmorch/wasmorch/controlplane"
	"github.com/wasmorch/wasmorch/controlplane/api"
	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/internal/ctrtest"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/wasmrt"
	"github.com/wasmorch/wasmorch/worker"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// allInOne is a control plane and one worker in this process.
type allInOne struct {
	control v1.ControlClient
	cancel  context.CancelFunc
	group   *errgroup.Group
	http    string // the gateway's address
	worker  *worker.Worker
}

type options struct {
	logBytes int64
	// containerd, when set, makes the worker offer the container runtime
	// on that daemon (containers_bench_test.go).
	containerd *ctrtest.Daemon
	// functionsOverHTTP makes the gateway reach the worker's function
	// server over HTTP, as across processes, instead of calling it
	// directly as `wasmorch up` does.
	functionsOverHTTP bool
	// coldIdle, when set, is the worker's ColdReplicaIdle.
	coldIdle time.Duration
	// memory, when set, is the worker's memory, of which reservedMemory
	// is kept from instances; functionMemoryWait its FunctionMemoryWait.
	memory, reservedMemory int64
	functionMemoryWait     time.Duration
	// logs, when set, receives the member's and the worker's log, debug
	// lines included.
	logs io.Writer
	// worker, when set, edits the worker's configuration last.
	worker func(*worker.Config)
	// stopGrace, when set, is the worker's StopGrace.
	stopGrace time.Duration
}

func start(tb testing.TB, opts options) *allInOne {
	tb.Helper()
	dir := tb.TempDir()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("WASMORCH_TEST_LOG") != "" {
		logger = slog.Default()
	}
	if opts.logs != nil {
		logger = slog.New(slog.NewTextHandler(opts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cp := controlplane.DefaultConfig()
	cp.Name, cp.DataDir, cp.Logger = "it", dir, logger
	cp.APIAddr, cp.HTTPAddr, cp.MetricsAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	srv, err := controlplane.New(ctx, cp)
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	wk := worker.DefaultConfig()
	wk.NodeName, wk.DataDir, wk.Logger = "it-node", filepath.Join(dir, "worker"), logger
	wk.ListenAddr, wk.Servers = "127.0.0.1:0", []string{srv.APIAddr()}
	if opts.logBytes > 0 {
		wk.LogBytesPerInstance = opts.logBytes
	}
	wk.ColdReplicaIdle = opts.coldIdle
	if opts.memory > 0 {
		wk.MemoryBytes, wk.ReservedMemoryBytes = opts.memory, opts.reservedMemory
	}
	wk.FunctionMemoryWait = opts.functionMemoryWait
	wk.StopGrace = opts.stopGrace
	if opts.worker != nil {
		opts.worker(&wk)
	}
	rtc := wasmrt.DefaultConfig()
	rtc.CacheDir, rtc.Logger = wk.CompileCacheDir(), logger
	rt, err := wasmrt.New(ctx, rtc)
	if err != nil {
		cancel()
		srv.Close()
		tb.Fatal(err)
	}
	wk.Runtimes = []runtimeapi.Runtime{rt}
	if opts.containerd != nil {
		wk.Runtimes = append(wk.Runtimes, containerRuntime(tb, opts.containerd))
	}
	if err := srv.IssueNodeCredential(wk.PKIDir(), wk.NodeName); err != nil {
		cancel()
		srv.Close()
		tb.Fatal(err)
	}
	w, err := worker.New(ctx, wk)
	if err != nil {
		cancel()
		srv.Close()
		tb.Fatal(err)
	}
	if !opts.functionsOverHTTP {
		srv.ServeFunctionsLocally(wk.NodeName, w.FunctionHandler())
	}
	g := &errgroup.Group{}
	g.Go(func() error { return srv.Start(ctx) })
	g.Go(func() error { return w.Start(ctx) })
	// The admin credential the member wrote, as the CLI uses it.
	cred, err := srv.AdminCredential()
	if err != nil {
		tb.Fatal(err)
	}
	tlsCfg, err := cred.ClientTLS()
	if err != nil {
		tb.Fatal(err)
	}
	conn, err := grpc.NewClient(srv.APIAddr(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		tb.Fatal(err)
	}
	a := &allInOne{control: v1.NewControlClient(conn), cancel: cancel, group: g, http: srv.HTTPAddr(), worker: w}
	tb.Cleanup(func() {
		_ = conn.Close()
		cancel()
		if err := g.Wait(); err != nil {
			tb.Errorf("all-in-one stopped with %v", err)
		}
	})
	a.waitFor(tb, "the node to be Ready", func() (bool, string) {
		l, err := a.control.ListNodes(ctx, &v1.ListNodesRequest{})
		return err == nil && len(l.GetNodes()) == 1 && l.GetNodes()[0].GetReady(), l.String()
	})
	return a
}

// deploy uploads testdata/<module> and applies a workload from it.
func (a *allInOne) deploy(tb testing.TB, name, module string, spec *v1.WorkloadSpec) {
	tb.Helper()
	if err := a.tryDeploy(name, module, spec); err != nil {
		tb.Fatalf("deploy %s: %v", name, err)
	}
}

func (a *allInOne) tryDeploy(name, module string, spec *v1.WorkloadSpec) error {
	ctx := context.Background()
	b, err := os.ReadFile(filepath.Join("..", "testdata", module))
	if err != nil {
		return err
	}
	digest := blobs.Digest(b)
	stream, err := a.control.UploadBlob(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Header{Header: &v1.UploadHeader{Digest: digest, Size: int64(len(b))}}}); err != nil {
		return err
	}
	for off := 0; off < len(b); off += 1 << 20 {
		if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Chunk{Chunk: b[off:min(off+1<<20, len(b))]}}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return errdefs.FromGRPC(err)
	}
	spec.ModuleDigest = digest
	_, err = a.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: name, Spec: spec})
	return errdefs.FromGRPC(err)
}

func (a *allInOne) instances(tb testing.TB, workload string) []*v1.InstanceView {
	tb.Helper()
	// Unfiltered: the instances of a deleted workload outlive it briefly.
	var out []*v1.InstanceView
	for _, iv := range a.allInstances(tb) {
		if iv.GetInstance().GetWorkload() == workload {
			out = append(out, iv)
		}
	}
	return out
}

// allInstances lists every instance, page by page.
func (a *allInOne) allInstances(tb testing.TB) []*v1.InstanceView {
	tb.Helper()
	var out []*v1.InstanceView
	req := &v1.ListInstancesRequest{Limit: api.MaxPageSize}
	for {
		l, err := a.control.ListInstances(context.Background(), req)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, l.GetInstances()...)
		if l.GetContinue() == "" {
			return out
		}
		req.Continue = l.GetContinue()
	}
}

func (a *allInOne) logs(tb testing.TB, workload string) map[string]string {
	tb.Helper()
	stream, err := a.control.Logs(context.Background(), &v1.LogsRequest{Workload: workload})
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]string{}
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			tb.Fatal(err)
		}
		out[c.GetInstance()] += string(c.GetData())
	}
}

// waitFor polls cond until it holds; the limit is a safety net against a
// hang, not a performance assertion.
func (a *allInOne) waitFor(tb testing.TB, what string, cond func() (bool, string)) {
	tb.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(10 * time.Millisecond)
	}
	tb.Fatalf("waiting for %s: gave up after 30s; last seen: %s", what, last)
}

// waitInstances waits until every instance of workload satisfies ok and
// there are n of them.
func (a *allInOne) waitInstances(tb testing.TB, workload string, n int, ok func(*v1.InstanceView) bool) []*v1.InstanceView {
	tb.Helper()
	var got []*v1.InstanceView
	a.waitFor(tb, workload+" instances", func() (bool, string) {
		got = a.instances(tb, workload)
		if len(got) != n {
			return false, describe(got)
		}
		for _, iv := range got {
			if !ok(iv) {
				return false, describe(got)
			}
		}
		return true, ""
	})
	return got
}

func describe(ivs []*v1.InstanceView) string {
	var b strings.Builder
	for _, iv := range ivs {
		b.WriteString(iv.GetInstance().GetId() + "=" + iv.GetState().String() + "(" + iv.GetStatus().GetReason() + ": " + iv.GetStatus().GetMessage() + ") ")
	}
	return "[" + b.String() + "]"
}

func state(s v1.InstanceState) func(*v1.InstanceView) bool {
	return func(iv *v1.InstanceView) bool { return iv.GetState() == s }
}
