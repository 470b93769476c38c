package cliclient

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/wasmorch/wasmorch/internal/cliout"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// fakeControl is a Control server whose instances follow a script: the
// n-th poll of ListInstances sees script(n).
type fakeControl struct {
	wasmorchv1.UnimplementedControlServer

	mu      sync.Mutex
	calls   int
	header  *wasmorchv1.UploadHeader
	chunks  []int
	applied *wasmorchv1.ApplyWorkloadRequest
	polls   int
	script  func(poll int) []*wasmorchv1.InstanceView
	fail    error // returned by Scale, Delete and GetWorkload when set
}

func (f *fakeControl) UploadBlob(stream wasmorchv1.Control_UploadBlobServer) error {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
	var got []byte
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		f.mu.Lock()
		if h := req.GetHeader(); h != nil {
			f.header = h
		} else {
			f.chunks = append(f.chunks, len(req.GetChunk()))
			got = append(got, req.GetChunk()...)
		}
		f.mu.Unlock()
	}
	sum := sha256.Sum256(got)
	return stream.SendAndClose(&wasmorchv1.UploadResponse{Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(got))})
}

func (f *fakeControl) ApplyWorkload(_ context.Context, req *wasmorchv1.ApplyWorkloadRequest) (*wasmorchv1.ApplyWorkloadResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.applied = req
	return &wasmorchv1.ApplyWorkloadResponse{Workload: f.workload(), Created: true, Changed: true}, nil
}

func (f *fakeControl) workload() *wasmorchv1.Workload {
	return &wasmorchv1.Workload{Name: f.applied.GetName(), Spec: f.applied.GetSpec(), Generation: 1}
}

func (f *fakeControl) GetWorkload(context.Context, *wasmorchv1.GetWorkloadRequest) (*wasmorchv1.WorkloadView, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail != nil {
		return nil, f.fail
	}
	return &wasmorchv1.WorkloadView{Workload: f.workload()}, nil
}

func (f *fakeControl) ListInstances(context.Context, *wasmorchv1.ListInstancesRequest) (*wasmorchv1.ListInstancesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	f.polls++
	return &wasmorchv1.ListInstancesResponse{Instances: f.script(f.polls - 1)}, nil
}

func (f *fakeControl) ListWorkloads(context.Context, *wasmorchv1.ListWorkloadsRequest) (*wasmorchv1.ListWorkloadsResponse, error) {
	return &wasmorchv1.ListWorkloadsResponse{}, nil
}

func (f *fakeControl) ScaleWorkload(context.Context, *wasmorchv1.ScaleRequest) (*wasmorchv1.Workload, error) {
	return nil, f.fail
}

func (f *fakeControl) DeleteWorkload(context.Context, *wasmorchv1.DeleteWorkloadRequest) (*wasmorchv1.DeleteWorkloadResponse, error) {
	return nil, f.fail
}

// serve starts f on a loopback port and returns a client for it.
func serve(t *testing.T, f wasmorchv1.ControlServer, opts ...grpc.ServerOption) *Client {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pki := newTestPKI(t)
	srv := grpc.NewServer(append(opts, grpc.Creds(pki.serverCreds(t)))...)
	wasmorchv1.RegisterControlServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	c, err := Dial(lis.Addr().String(), "deploy", WithCredential(pki.adminCredential(t), nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	_ = lis.Close()
	return addr
}

func running2(poll int) []*wasmorchv1.InstanceView {
	switch poll {
	case 0:
		return nil
	case 1:
		return []*wasmorchv1.InstanceView{inst("hello-a", 1, running, nil), inst("hello-b", 1, starting, nil)}
	}
	return []*wasmorchv1.InstanceView{inst("hello-a", 1, running, nil), inst("hello-b", 1, running, nil)}
}

func TestDeployUploadsInChunksAppliesAndWaitsUntilReady(t *testing.T) {
	const module = "../../testdata/gohello.wasm" // 2.6 MB: several chunks
	wasm, err := os.ReadFile(module)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeControl{script: running2}
	c := serve(t, f)
	var progress []cliout.Step
	res, err := c.Deploy(context.Background(), DeployConfig{
		File: module, Name: "hello", Replicas: 2, Env: []string{"A=1"}, Memory: "64Mi", Restart: "on-failure",
		Args: []string{"x"},
	}, func(s cliout.Step) { progress = append(progress, s) })
	if err != nil {
		t.Fatal(err)
	}
	if res.Name != "hello" || res.Generation != 1 || res.Ready != 2 || res.Replicas != 2 || !res.Waited {
		t.Errorf("result = %+v", res)
	}

	sum := sha256.Sum256(wasm)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	if f.header.GetDigest() != digest || f.header.GetSize() != int64(len(wasm)) || f.header.GetMediaType() != "application/wasm" {
		t.Errorf("upload header = %v", f.header)
	}
	total := 0
	for _, n := range f.chunks {
		if n > 1<<20 {
			t.Errorf("a chunk of %d bytes is over 1 MiB", n)
		}
		total += n
	}
	if total != len(wasm) || len(f.chunks) < 3 {
		t.Errorf("uploaded %d bytes in %d chunks, want %d bytes in at least 3", total, len(f.chunks), len(wasm))
	}
	spec := f.applied.GetSpec()
	if f.applied.GetName() != "hello" || spec.GetModuleDigest() != digest || spec.GetModuleSize() != int64(len(wasm)) ||
		spec.GetReplicas() != 2 || spec.GetMemoryBytes() != 64<<20 || spec.GetKind() != "wasm" ||
		spec.GetRestart() != wasmorchv1.RestartPolicy_RESTART_POLICY_ON_FAILURE || spec.GetArgs()[0] != "x" || spec.GetEnv()[0].GetName() != "A" {
		t.Errorf("applied %v", f.applied)
	}
	if last := len(progress) - 1; last < 0 || progress[last] != (cliout.Step{Text: "hello: 2/2 ready", Done: 2, Total: 2}) {
		t.Errorf("progress = %+v, want it to end with hello: 2/2 ready, 2 of 2 done", progress)
	}
}

func TestDeployFailsFastNamingTheFailedInstance(t *testing.T) {
	f := &fakeControl{script: func(int) []*wasmorchv1.InstanceView {
		return []*wasmorchv1.InstanceView{inst("fail-x1", 1, failedSt, &wasmorchv1.InstanceStatus{
			State: failedSt, Exited: true, ExitCode: 3, Reason: "Error",
		})}
	}}
	c := serve(t, f)
	_, err := c.Deploy(context.Background(), DeployConfig{File: "../../testdata/fail.wasm", Replicas: 1}, nil)
	want := "workload fail is not ready: instance fail-x1 failed: Error: exit code 3; see 'wasmorch logs fail'"
	if err == nil || err.Error() != want {
		t.Errorf("Deploy = %v, want %q", err, want)
	}
}

func TestDeployTimesOutNamingWhatItWaitsFor(t *testing.T) {
	f := &fakeControl{script: func(int) []*wasmorchv1.InstanceView {
		return []*wasmorchv1.InstanceView{{Instance: &wasmorchv1.Instance{Id: "hello-a", Generation: 1, PendingReason: "no node is ready"}, State: pending}}
	}}
	c := serve(t, f)
	_, err := c.Deploy(context.Background(), DeployConfig{File: "../../testdata/hello.wasm", Replicas: 1, Timeout: 300 * time.Millisecond}, nil)
	if err == nil || !strings.Contains(err.Error(), "0/1 ready") || !strings.Contains(err.Error(), "Pending: no node is ready") {
		t.Errorf("Deploy = %v, want a timeout naming 0/1 ready and the pending reason", err)
	}
}

func TestDeployInterruptedWhileWaitingSaysSo(t *testing.T) {
	f := &fakeControl{script: func(int) []*wasmorchv1.InstanceView { return nil }}
	c := serve(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := c.Deploy(ctx, DeployConfig{File: "../../testdata/hello.wasm", Replicas: 1}, func(cliout.Step) { cancel() })
	if err == nil || !strings.HasPrefix(err.Error(), "interrupted; ") {
		t.Errorf("Deploy = %v, want interrupted", err)
	}
}

func TestDeployWithZeroReplicasDoesNotWait(t *testing.T) {
	f := &fakeControl{script: func(int) []*wasmorchv1.InstanceView { t.Error("polled"); return nil }}
	c := serve(t, f)
	res, err := c.Deploy(context.Background(), DeployConfig{File: "../../testdata/hello.wasm", Replicas: 0}, nil)
	if err != nil || res.Replicas != 0 {
		t.Errorf("Deploy = %+v, %v", res, err)
	}
}

func TestDeployRejectsBadInputWithoutTheNetwork(t *testing.T) {
	// Nothing listens there: every failure below must come first.
	c, err := Dial(closedPort(t), "deploy")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		cfg  DeployConfig
		want string
	}{
		{DeployConfig{File: "../../testdata/garbage.wasm", Replicas: 1}, "../../testdata/garbage.wasm is not a valid WebAssembly module: "},
		{DeployConfig{File: "../../testdata/truncated.wasm", Replicas: 1}, "../../testdata/truncated.wasm is not a valid WebAssembly module: "},
		{DeployConfig{File: "../../testdata/missing.wasm", Replicas: 1}, "cannot read ../../testdata/missing.wasm: no such file or directory; check the path"},
		{DeployConfig{File: "../../testdata/hello.wasm", Replicas: -1}, "invalid --replicas -1"},
	} {
		_, err := c.Deploy(context.Background(), tc.cfg, nil)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Deploy(%s) = %v, want one line starting %q", tc.cfg.File, err, tc.want)
		}
	}
}

func TestAnUnreachableServerIsReportedWithWhatToDo(t *testing.T) {
	addr := closedPort(t)
	c, err := Dial(addr, "get")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.ListWorkloads(context.Background())
	want := "cannot reach the wasmorch server at " + addr + " (connection refused); is 'wasmorch up' running? set --server or WASMORCH_SERVER"
	if err == nil || err.Error() != want {
		t.Errorf("ListWorkloads = %v, want %q", err, want)
	}
	if !errdefs.IsUnavailable(err) {
		t.Errorf("%v is not in the Unavailable category", err)
	}
}

func TestServerErrorsKeepTheirCategoryAndGainAHint(t *testing.T) {
	for _, tc := range []struct {
		fail error
		want string
		is   error
	}{
		{errdefs.NotFoundf("workload %q: not found", "nope"), `workload "nope" not found; see 'wasmorch get workloads'`, errdefs.ErrNotFound},
		{errdefs.Invalidf("replicas must be at least 0"), "the server refused the request: replicas must be at least 0; fix it and try again (see 'wasmorch deploy --help')", errdefs.ErrInvalidArgument},
		{errdefs.Preconditionf("no leader yet"), "no leader yet; see 'wasmorch get nodes' and 'wasmorch get workloads'", errdefs.ErrFailedPrecondition},
	} {
		f := &fakeControl{fail: errdefs.ToGRPC(tc.fail)}
		c := serve(t, f)
		_, err := c.Scale(context.Background(), "nope", 2)
		if err == nil || err.Error() != tc.want || !errors.Is(err, tc.is) {
			t.Errorf("Scale = %v, want %q in category %v", err, tc.want, tc.is)
		}
	}
}

func TestDialRejectsAnAddressThatIsNotHostPort(t *testing.T) {
	_, err := Dial("localhost", "get")
	if err == nil || !strings.Contains(err.Error(), "HOST:PORT") {
		t.Errorf("Dial = %v", err)
	}
}

// bigEnv is n environment variables of 1 KiB each.
func bigEnv(n int) []string {
	env := make([]string, n)
	for i := range env {
		env[i] = fmt.Sprintf("V%d=%s", i, strings.Repeat("x", 1<<10))
	}
	return env
}

// TestAnOversizedSpecIsRefusedBeforeItIsSent: a spec over the 4 MiB a
// server takes in one message is a permanent error naming its size and
// what to do, and is not sent (gRPC's own answer is ResourceExhausted,
// which said nothing a user could act on).
func TestAnOversizedSpecIsRefusedBeforeItIsSent(t *testing.T) {
	f := &fakeControl{script: running2}
	c := serve(t, f)
	_, err := c.Deploy(context.Background(), DeployConfig{File: "../../testdata/hello.wasm", Name: "big", Replicas: 1, Env: bigEnv(10 << 10)}, nil)
	want := "the spec of workload big is 10.1 MiB, more than the 4 MiB a wasmorch server takes in one request; move long environment values, arguments or files into a config or secret (docs/manifests.md)"
	if err == nil || err.Error() != want {
		t.Fatalf("Deploy = %v, want %q", err, want)
	}
	if f.applied != nil {
		t.Fatalf("the oversized spec was sent")
	}
}

// TestAMessageOverTheServersLimitIsPermanent: a server whose limit is
// lower than the client's (an older or differently built one) answers
// ResourceExhausted; the client says it refused the request and what to
// do, not to try again.
func TestAMessageOverTheServersLimitIsPermanent(t *testing.T) {
	f := &fakeControl{script: running2}
	c := serve(t, f, grpc.MaxRecvMsgSize(64<<10))
	_, err := c.Deploy(context.Background(), DeployConfig{File: "../../testdata/hello.wasm", Name: "big", Replicas: 1, Env: bigEnv(100)}, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "the wasmorch server at "+c.Addr()+" refused the request: ") ||
		!strings.HasSuffix(err.Error(), "; make it smaller: long environment values, arguments and files belong in a config or secret") {
		t.Fatalf("Deploy = %v, want a permanent refusal saying to make the request smaller", err)
	}
}
