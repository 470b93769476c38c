package controlplane_test

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/wasmorch/wasmorch/controlplane"
	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// cluster is one real control-plane member (embedded etcd) on loopback.
type cluster struct {
	srv     *controlplane.Server
	control v1.ControlClient
	agent   v1.AgentClient
	cancel  context.CancelFunc
	done    chan error
}

func startCluster(t *testing.T, dir string) *cluster {
	t.Helper()
	return startClusterTB(t, dir)
}

func startClusterB(b *testing.B) *cluster { return startClusterTB(b, b.TempDir()) }

func startClusterTB(t testing.TB, dir string) *cluster {
	t.Helper()
	return startClusterWith(t, dir, nil)
}

// startClusterWith is startCluster with the defaults changed by set.
func startClusterWith(t testing.TB, dir string, set func(*controlplane.Config)) *cluster {
	t.Helper()
	cfg := controlplane.DefaultConfig()
	if set != nil {
		set(&cfg)
	}
	cfg.Name = "cp1"
	cfg.DataDir = dir
	cfg.APIAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	if cfg.MetricsAddr != "" {
		cfg.MetricsAddr = "127.0.0.1:0"
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := controlplane.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	c := &cluster{srv: srv, cancel: cancel, done: make(chan error, 1)}
	go func() { c.done <- srv.Start(ctx) }()
	// A member's credential: it may call Control, and Agent for any node
	// (the tests play many nodes over one connection).
	conn, err := grpc.NewClient(srv.APIAddr(), grpc.WithTransportCredentials(srv.MemberCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	c.control, c.agent = v1.NewControlClient(conn), v1.NewAgentClient(conn)
	t.Cleanup(func() { _ = conn.Close(); c.stop(t) })
	return c
}

func (c *cluster) stop(t testing.TB) {
	c.cancel()
	select {
	case err := <-c.done:
		if err != nil {
			t.Errorf("server stopped with %v", err)
		}
		c.done <- nil
	case <-time.After(20 * time.Second):
		t.Errorf("server did not stop within 20s")
	}
}

func upload(ctx context.Context, t *testing.T, c v1.ControlClient, b []byte, digest string) error {
	t.Helper()
	return uploadB(ctx, c, b, digest)
}

func uploadB(ctx context.Context, c v1.ControlClient, b []byte, digest string) error {
	stream, err := c.UploadBlob(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Header{Header: &v1.UploadHeader{Digest: digest, Size: int64(len(b)), MediaType: "application/wasm"}}}); err != nil {
		return err
	}
	for off := 0; off < len(b); off += 100_000 {
		end := min(off+100_000, len(b))
		if err := stream.Send(&v1.UploadRequest{Part: &v1.UploadRequest_Chunk{Chunk: b[off:end]}}); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
	}
	_, err = stream.CloseAndRecv()
	return errdefs.FromGRPC(err)
}

func readModule(t *testing.T, name string) []byte { return readModuleB(t, name) }

func readModuleB(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// eventually polls cond until it holds, failing the test after a generous
// safety limit (not a performance assertion).
func eventually(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: still not true after 20s; last: %s", what, last)
}

func TestWorkloadLifecycleThroughAgentProtocol(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	hello := readModule(t, "hello.wasm")
	digest := blobs.Digest(hello)
	if err := upload(ctx, t, c.control, hello, digest); err != nil {
		t.Fatalf("upload: %v", err)
	}
	// Uploading the same bytes again is deduplicated.
	if err := upload(ctx, t, c.control, hello, digest); err != nil {
		t.Fatalf("second upload: %v", err)
	}

	reg, err := c.agent.Register(ctx, &v1.RegisterRequest{Node: &v1.Node{
		Name: "n1", Address: "127.0.0.1:1", Arch: "amd64", Os: "linux", Runtimes: []string{"wasm"},
		Capacity: &v1.Resources{MemoryBytes: 1 << 30, Instances: 100},
	}})
	if err != nil || reg.GetHeartbeatIntervalMs() <= 0 {
		t.Fatalf("register: %v %v", reg, err)
	}
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	session, err := c.agent.Session(sctx, &v1.SessionRequest{Node: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	sets := make(chan *v1.Assignments, 100)
	go func() {
		for {
			set, err := session.Recv()
			if err != nil {
				close(sets)
				return
			}
			sets <- set
		}
	}()
	go func() { // heartbeats, as a worker sends them
		for sctx.Err() == nil {
			_, _ = c.agent.Heartbeat(sctx, &v1.HeartbeatRequest{Node: "n1"})
			time.Sleep(200 * time.Millisecond)
		}
	}()
	waitSet := func(n int) *v1.Assignments {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case set := <-sets:
				if len(set.GetInstances()) == n {
					return set
				}
			case <-deadline:
				t.Fatalf("no assignment set of %d instances within 20s", n)
			}
		}
	}
	waitSet(0)

	resp, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "hello", Spec: &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 3}})
	if err != nil || !resp.GetCreated() || resp.GetWorkload().GetGeneration() != 1 {
		t.Fatalf("apply: %v %v", resp, err)
	}
	set := waitSet(3)
	var statuses []*v1.InstanceStatus
	for _, inst := range set.GetInstances() {
		if inst.GetNode() != "n1" || inst.GetSpec().GetModuleDigest() != digest {
			t.Fatalf("assigned instance %v", inst)
		}
		statuses = append(statuses, &v1.InstanceStatus{Id: inst.GetId(), State: v1.InstanceState_INSTANCE_STATE_RUNNING})
	}
	if _, err := c.agent.ReportStatus(ctx, &v1.StatusBatch{Node: "n1", Statuses: statuses}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "3/3 ready", func() (bool, string) {
		v, err := c.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: "hello"})
		return err == nil && v.GetReady() == 3, v.String()
	})

	// Same spec again: nothing changes.
	again, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "hello", Spec: &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 3}})
	if err != nil || again.GetChanged() || again.GetWorkload().GetGeneration() != 1 {
		t.Fatalf("re-apply of the same spec changed something: %v %v", again, err)
	}

	// What goes is marked terminating in the node's set, and leaves the
	// set once the node reports it stopped.
	stopped := func(set *v1.Assignments, n int) {
		t.Helper()
		var sts []*v1.InstanceStatus
		for _, inst := range set.GetInstances() {
			if inst.GetTerminatingUnixNano() != 0 {
				sts = append(sts, &v1.InstanceStatus{Id: inst.GetId(), State: v1.InstanceState_INSTANCE_STATE_STOPPED})
			}
		}
		if len(sts) != n {
			t.Fatalf("%d instances marked terminating in %v, want %d", len(sts), set, n)
		}
		if _, err := c.agent.ReportStatus(ctx, &v1.StatusBatch{Node: "n1", Statuses: sts}); err != nil {
			t.Fatal(err)
		}
	}
	terminating := func(set *v1.Assignments) (n int) {
		for _, inst := range set.GetInstances() {
			if inst.GetTerminatingUnixNano() != 0 {
				n++
			}
		}
		return n
	}
	waitTerminating := func(n int) *v1.Assignments {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case set := <-sets:
				if terminating(set) == n {
					return set
				}
			case <-deadline:
				t.Fatalf("no assignment set with %d instances terminating within 20s", n)
			}
		}
	}
	if _, err := c.control.ScaleWorkload(ctx, &v1.ScaleRequest{Name: "hello", Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	stopped(waitTerminating(2), 2)
	waitSet(1)
	if _, err := c.control.DeleteWorkload(ctx, &v1.DeleteWorkloadRequest{Name: "hello"}); err != nil {
		t.Fatal(err)
	}
	stopped(waitTerminating(1), 1)
	waitSet(0)
	eventually(t, "statuses of deleted instances are cleaned up", func() (bool, string) {
		l, err := c.control.ListInstances(ctx, &v1.ListInstancesRequest{})
		return err == nil && len(l.GetInstances()) == 0, l.String()
	})
}

func TestBadInputIsRefusedAndStoresNothing(t *testing.T) {
	c := startCluster(t, t.TempDir())
	ctx := context.Background()
	hello := readModule(t, "hello.wasm")
	digest := blobs.Digest(hello)
	if err := upload(ctx, t, c.control, hello, digest); err != nil {
		t.Fatal(err)
	}
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "hello", Spec: &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 1}}); err != nil {
		t.Fatal(err)
	}
	garbage := readModule(t, "garbage.wasm")
	truncated := readModule(t, "truncated.wasm")
	tests := []struct {
		name    string
		call    func() error
		is      error
		message string
	}{
		{"digest mismatch", func() error { return upload(ctx, t, c.control, hello, blobs.Digest([]byte("other"))) }, errdefs.ErrInvalidArgument, "digest mismatch"},
		{"malformed digest", func() error { return upload(ctx, t, c.control, hello, "md5:abc") }, errdefs.ErrInvalidArgument, "sha256"},
		{"garbage bytes", func() error { return upload(ctx, t, c.control, garbage, blobs.Digest(garbage)) }, errdefs.ErrInvalidArgument, "invalid module"},
		{"truncated module", func() error { return upload(ctx, t, c.control, truncated, blobs.Digest(truncated)) }, errdefs.ErrInvalidArgument, "invalid module"},
		{"name not a DNS label", func() error {
			_, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "Hello_World", Spec: &v1.WorkloadSpec{ModuleDigest: digest}})
			return errdefs.FromGRPC(err)
		}, errdefs.ErrInvalidArgument, "DNS label"},
		{"negative replicas", func() error {
			_, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "neg", Spec: &v1.WorkloadSpec{ModuleDigest: digest, Replicas: -1}})
			return errdefs.FromGRPC(err)
		}, errdefs.ErrInvalidArgument, "replicas -1"},
		{"module never uploaded", func() error {
			_, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "ghost", Spec: &v1.WorkloadSpec{ModuleDigest: blobs.Digest([]byte("x"))}})
			return errdefs.FromGRPC(err)
		}, errdefs.ErrFailedPrecondition, "has not been uploaded"},
		{"same name, other kind", func() error {
			_, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "hello", Spec: &v1.WorkloadSpec{Kind: "container", ModuleDigest: digest}})
			return errdefs.FromGRPC(err)
		}, errdefs.ErrFailedPrecondition, "already exists with kind \"wasm\""},
		{"scale unknown", func() error {
			_, err := c.control.ScaleWorkload(ctx, &v1.ScaleRequest{Name: "nope", Replicas: 1})
			return errdefs.FromGRPC(err)
		}, errdefs.ErrNotFound, "workload \"nope\" not found"},
		{"delete unknown", func() error {
			_, err := c.control.DeleteWorkload(ctx, &v1.DeleteWorkloadRequest{Name: "nope"})
			return errdefs.FromGRPC(err)
		}, errdefs.ErrNotFound, "not found"},
		{"logs of unknown", func() error {
			s, err := c.control.Logs(ctx, &v1.LogsRequest{Workload: "nope"})
			if err != nil {
				return errdefs.FromGRPC(err)
			}
			_, err = s.Recv()
			return errdefs.FromGRPC(err)
		}, errdefs.ErrNotFound, "not found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("got %v; want %v containing %q", err, tc.is, tc.message)
			}
		})
	}
	l, err := c.control.ListWorkloads(ctx, &v1.ListWorkloadsRequest{})
	if err != nil || len(l.GetWorkloads()) != 1 || l.GetWorkloads()[0].GetWorkload().GetSpec().GetKind() != "wasm" {
		t.Fatalf("store changed by refused calls: %v %v", l, err)
	}
}

func TestStateSurvivesRestartOnSameDataDir(t *testing.T) {
	dir := t.TempDir()
	c := startCluster(t, dir)
	ctx := context.Background()
	hello := readModule(t, "gohello.wasm") // over 1 MiB: stored in several chunks
	digest := blobs.Digest(hello)
	if err := upload(ctx, t, c.control, hello, digest); err != nil {
		t.Fatal(err)
	}
	if _, err := c.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "hello", Spec: &v1.WorkloadSpec{ModuleDigest: digest, Replicas: 2}}); err != nil {
		t.Fatal(err)
	}
	c.stop(t)

	c2 := startCluster(t, dir)
	v, err := c2.control.GetWorkload(ctx, &v1.GetWorkloadRequest{Name: "hello"})
	if err != nil || v.GetWorkload().GetSpec().GetReplicas() != 2 {
		t.Fatalf("after restart: %v %v", v, err)
	}
	stream, err := c2.agent.FetchBlob(ctx, &v1.FetchBlobRequest{Digest: digest})
	if err != nil {
		t.Fatal(err)
	}
	var got []byte
	for {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, chunk.GetData()...)
	}
	if blobs.Digest(got) != digest {
		t.Fatalf("blob after restart hashes to %s", blobs.Digest(got))
	}
}
