//go:build linux

package worker

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// serviceEnv is a worker with the real wasm runtime, whose control plane
// serves cserver.wasm.
func serviceEnv(t *testing.T, fakeTime bool) (*env, string) {
	t.Helper()
	module, digest := readTestdata(t, "cserver.wasm")
	rt := newWasmRuntime(t)
	e := startEnv(t, envOptions{
		fakeTime: fakeTime,
		cp:       func(cp *fakeCP) { cp.blobs[digest] = module },
		config:   func(c *Config) { c.Runtimes = []runtimeapi.Runtime{rt} },
	})
	return e, digest
}

func serviceRec(id, digest string, spec *pb.WorkloadSpec) *pb.Instance {
	spec.Kind, spec.ModuleDigest = "wasm", digest
	return &pb.Instance{Id: id, Workload: "svc", Generation: 1, Node: "node-a", Spec: spec}
}

// waitState waits until the status of id is state with reason, as the
// control plane heard it (as the worker has it on fake time, where
// reports wait for the clock).
func (e *env) waitState(id string, state pb.InstanceState, reason string) *pb.InstanceStatus {
	e.t.Helper()
	var st *pb.InstanceStatus
	eventually(e.t, id+" "+state.String()+" "+reason, func() bool {
		if st = e.cp.status(id); e.clock != nil {
			st = e.workerStatus(id)
		}
		return st.GetState() == state && st.GetReason() == reason
	})
	return st
}

// serviceAddr is where the worker listens for the service instance id.
func (e *env) serviceAddr(id string) string {
	var addr string
	e.inspect(id, func(in *instance) {
		if svc, ok := in.run.(*wasmService); ok {
			addr = svc.addr
		}
	})
	return addr
}

// An HTTP Wasm service is Running once its guest accepts; the function
// server forwards the route's requests to its listener; stopping it closes
// the listener.
func TestWasmServiceServesThroughTheFunctionServer(t *testing.T) {
	e, digest := serviceEnv(t, false)
	e.cp.setDesired(serviceRec("svc-1", digest, &pb.WorkloadSpec{Port: 8080, Http: &pb.HttpTrigger{Route: "/c"}}))
	e.waitState("svc-1", pb.InstanceState_INSTANCE_STATE_RUNNING, "")

	req := httptest.NewRequest(http.MethodGet, "/c/hello?x=1", nil)
	req.Header.Set(httptrigger.HeaderInstance, "svc-1")
	rec := httptest.NewRecorder()
	e.w.FunctionHandler().ServeHTTP(rec, req)
	if body, _ := io.ReadAll(rec.Body); rec.Code != http.StatusOK || string(body) != "hello from c: GET /c/hello (0 bytes)\n" {
		t.Errorf("through the function server: %d %q", rec.Code, body)
	}

	addr := e.serviceAddr("svc-1")
	if host, _, _ := net.SplitHostPort(addr); host != "127.0.0.1" {
		t.Errorf("the listener is on %q, want a loopback port of the worker's choosing", addr)
	}
	e.cp.setDesired()
	e.waitState("svc-1", pb.InstanceState_INSTANCE_STATE_STOPPED, runtimeapi.ReasonStopped)
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("the stopped service's listener %s still accepts connections", addr)
	}
}

// A guest that never accepts stays Starting, saying what it waits for,
// and NotAccepting once the window has passed; it is not restarted.
func TestWasmServiceThatNeverAcceptsIsNotReady(t *testing.T) {
	e, digest := serviceEnv(t, true)
	e.cp.setDesired(serviceRec("never-1", digest, &pb.WorkloadSpec{Port: 8080, Args: []string{"never"}, Http: &pb.HttpTrigger{Route: "/n"}}))
	st := e.waitState("never-1", pb.InstanceState_INSTANCE_STATE_STARTING, "")
	eventually(t, "the waiting message", func() bool {
		st = e.workerStatus("never-1")
		return strings.Contains(st.GetMessage(), "waiting for the guest to accept connections")
	})
	eventually(t, "the accept window armed", func() bool { return e.clock.hasPending(serviceAcceptWindow) })
	e.clock.Advance(serviceAcceptWindow)
	st = e.waitState("never-1", pb.InstanceState_INSTANCE_STATE_STARTING, ReasonNotAccepting)
	if !strings.Contains(st.GetMessage(), "has not accepted connections on its listener (port 8080") || st.GetRestarts() != 0 {
		t.Errorf("status %v", st)
	}
}

// A plain TCP service listens on the node's port; a second instance on
// the same port fails with PortInUse.
func TestWasmTCPServiceOnTheNodePort(t *testing.T) {
	e, digest := serviceEnv(t, false)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // free for the service (a race with other processes is unlikely, and fails loudly)
	e.cp.setDesired(
		serviceRec("tcp-1", digest, &pb.WorkloadSpec{Port: int32(port), Tcp: true}),
	)
	e.waitState("tcp-1", pb.InstanceState_INSTANCE_STATE_RUNNING, "")
	c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("GET /plain HTTP/1.0\r\n\r\n"))
	b, _ := io.ReadAll(c)
	c.Close()
	if !strings.HasSuffix(string(b), "hello from c: GET /plain (0 bytes)\n") {
		t.Errorf("on the node port: %q", b)
	}

	e.cp.setDesired(
		serviceRec("tcp-1", digest, &pb.WorkloadSpec{Port: int32(port), Tcp: true}),
		serviceRec("tcp-2", digest, &pb.WorkloadSpec{Port: int32(port), Tcp: true, Restart: pb.RestartPolicy_RESTART_POLICY_NEVER}),
	)
	st := e.waitState("tcp-2", pb.InstanceState_INSTANCE_STATE_FAILED, ReasonPortInUse)
	if want := "port " + strconv.Itoa(port) + " is in use on node node-a"; !strings.Contains(st.GetMessage(), want) {
		t.Errorf("message %q, want %q", st.GetMessage(), want)
	}
}

// An HTTP Wasm service is a long-running instance, not a function: its
// scratch space is the instance's own /tmp, kept while it runs and removed
// with it (a function's requests get one each instead).
func TestWasmServiceHasTheScratchSpaceOfAnInstance(t *testing.T) {
	e, digest := serviceEnv(t, false)
	e.cp.setDesired(serviceRec("svc-1", digest, &pb.WorkloadSpec{Port: 8080, ScratchBytes: 1 << 20, Http: &pb.HttpTrigger{Route: "/c"}}))
	e.waitState("svc-1", pb.InstanceState_INSTANCE_STATE_RUNNING, "")
	dir, err := e.w.scratchPath("svc-1")
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("the service's scratch space %s: %v", dir, err)
	}
	e.cp.setDesired()
	e.waitState("svc-1", pb.InstanceState_INSTANCE_STATE_STOPPED, runtimeapi.ReasonStopped)
	eventually(t, "the scratch space removed", func() bool { _, err := os.Stat(dir); return os.IsNotExist(err) })
}
