package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/version"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/internal/fakert"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

func TestConfigValidate(t *testing.T) {
	valid := func() Config {
		return Config{NodeName: "n", DataDir: "/tmp/x", Servers: []string{"127.0.0.1:7070"}, MemoryBytes: 1 << 30, Runtimes: []runtimeapi.Runtime{fakert.New("wasm")}}
	}
	tests := []struct {
		name   string
		change func(*Config)
		want   string // substring of the error; "" = valid
	}{
		{"a minimal config is valid", func(*Config) {}, ""},
		{"data dir is required", func(c *Config) { c.DataDir = "" }, "DataDir"},
		{"a server is required", func(c *Config) { c.Servers = nil }, "Servers"},
		{"server addresses need a port", func(c *Config) { c.Servers = []string{"localhost"} }, "server address"},
		{"listen address must parse", func(c *Config) { c.ListenAddr = "nope" }, "ListenAddr"},
		{"advertise address must parse", func(c *Config) { c.AdvertiseAddr = "host:port:x" }, "AdvertiseAddr"},
		{"a runtime is required", func(c *Config) { c.Runtimes = nil }, "Runtimes"},
		{"runtime names are unique", func(c *Config) { c.Runtimes = append(c.Runtimes, fakert.New("wasm")) }, "two runtimes"},
		{"max instances is not negative", func(c *Config) { c.MaxInstances = -1 }, "MaxInstances"},
		{"log bound has a floor", func(c *Config) { c.LogBytesPerInstance = 10 }, "LogBytesPerInstance"},
		{"reserved memory leaves some to instances", func(c *Config) { c.ReservedMemoryBytes = 1 << 30 }, "ReservedMemoryBytes"},
		{"memory wait is not negative", func(c *Config) { c.FunctionMemoryWait = -1 }, "FunctionMemoryWait"},
		{"memory queue is not negative", func(c *Config) { c.FunctionMemoryQueue = -1 }, "FunctionMemoryQueue"},
		{"the node's log budget holds two logs", func(c *Config) { c.LogBytesTotal = c.withDefaults().LogBytesPerInstance }, "LogBytesTotal"},
		{"a disk percentage is at most 100", func(c *Config) { c.DiskPressureFreePercent = 101 }, "DiskPressureFreePercent"},
		{"disk pressure can go by bytes alone", func(c *Config) { c.DiskPressureFreePercent = -1 }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.change(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errdefs.IsInvalidArgument(err) {
				t.Fatalf("Validate() = %v, want an invalid argument about %s", err, tt.want)
			}
		})
	}
}

func TestDefaultConfig(t *testing.T) {
	c := DefaultConfig()
	host, _ := os.Hostname()
	if c.NodeName != host || c.ListenAddr != DefaultListenAddr || c.MaxInstances != DefaultMaxInstances ||
		c.LogBytesPerInstance != DefaultLogBytesPerInstance || c.StatusBatchInterval != DefaultStatusBatchInterval ||
		c.LogBytesTotal != DefaultLogBytesTotal || c.DiskPressureFree != DefaultDiskPressureFree || c.DiskPressureFreePercent != DefaultDiskPressureFreePercent {
		t.Fatalf("DefaultConfig() = %+v", c)
	}
	if runtime.GOOS == "linux" && c.MemoryBytes <= 0 {
		t.Fatalf("MemoryBytes = %d, want the host's total memory", c.MemoryBytes)
	}
}

// TestAllocatableMemory: the instances and requests of a node share its
// memory less what is kept for the system and wasmorch: a tenth by
// default, at least 256 MiB but never more than half, or what the config
// says.
func TestAllocatableMemory(t *testing.T) {
	const MiB, GiB = 1 << 20, 1 << 30
	tests := []struct {
		memory, reserved, want int64
	}{
		{24 * GiB, 0, 24*GiB - 24*GiB/10},
		{1 * GiB, 0, 768 * MiB},
		{256 * MiB, 0, 128 * MiB},
		{8 * GiB, 2 * GiB, 6 * GiB},
		{8 * GiB, -1, 8 * GiB},
	}
	for _, tt := range tests {
		c := Config{MemoryBytes: tt.memory, ReservedMemoryBytes: tt.reserved}
		if got := c.Allocatable(); got != tt.want {
			t.Errorf("%d MiB, %d MiB reserved: allocatable %d MiB, want %d MiB", tt.memory/MiB, tt.reserved/MiB, got/MiB, tt.want/MiB)
		}
	}
}

func TestNewLeavesNothingBehindOnError(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	base := func() Config {
		return Config{NodeName: "n", Servers: []string{"127.0.0.1:1"}, MemoryBytes: 1 << 30, Runtimes: []runtimeapi.Runtime{fakert.New("wasm")}}
	}

	t.Run("port in use", func(t *testing.T) {
		c := base()
		c.DataDir = filepath.Join(t.TempDir(), "data")
		c.ListenAddr = busy.Addr().String()
		if _, err := New(context.Background(), c); err == nil {
			t.Fatal("New succeeded on a busy port")
		}
		if _, err := os.Stat(c.DataDir); !os.IsNotExist(err) {
			t.Fatalf("data dir left behind: %v", err)
		}
	})

	t.Run("data dir cannot be made", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(file, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		probe, _ := net.Listen("tcp", "127.0.0.1:0")
		addr := probe.Addr().String()
		probe.Close()
		c := base()
		c.DataDir = filepath.Join(file, "data")
		c.ListenAddr = addr
		if _, err := New(context.Background(), c); err == nil {
			t.Fatal("New succeeded with a data dir under a file")
		}
		again, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listener left open: %v", err)
		}
		again.Close()
	})
}

// TestRegistersTheNodeAndHeartbeats: the node registers what it offers,
// its memory capacity being its allocatable memory (its memory less the
// reserved part), and heartbeats.
func TestRegistersTheNodeAndHeartbeats(t *testing.T) {
	e := startEnv(t, envOptions{config: func(c *Config) {
		c.Labels = map[string]string{"zone": "a"}
		c.MaxInstances = 50
		c.MemoryBytes, c.ReservedMemoryBytes = 8<<30, 1<<30
	}})
	eventually(t, "registration", func() bool { return len(e.cp.registrations()) > 0 })
	n := e.cp.registrations()[0]
	want := &pb.Node{
		Name: "node-a", Address: e.w.Addr(), Arch: runtime.GOARCH, Os: runtime.GOOS,
		Capacity: &pb.Resources{MemoryBytes: 7 << 30, CpuMillis: int64(runtime.NumCPU()) * 1000, Instances: 50},
		Runtimes: []string{"wasm"}, Labels: map[string]string{"zone": "a"}, Version: version.Version,
		HttpAddress: e.w.FunctionAddr(), MaxScratchBytes: DefaultMaxScratchBytes, // state
	}
	if got, want := n.String(), want.String(); got != want {
		t.Fatalf("registered\n%s\nwant\n%s", got, want)
	}
	eventually(t, "heartbeats", func() bool {
		e.cp.mu.Lock()
		defer e.cp.mu.Unlock()
		return e.cp.heartbeats >= 2
	})
}

func TestConvergesToTheFullDesiredSet(t *testing.T) {
	e := startEnv(t, envOptions{})
	e.cp.setDesired(rec("a", 0), rec("b", 0), rec("c", 0))
	for _, id := range []string{"a", "b", "c"} {
		e.waitRunning(id)
	}
	eventually(t, "RUNNING reported", func() bool {
		for _, id := range []string{"a", "b", "c"} {
			if e.cp.status(id).GetState() != pb.InstanceState_INSTANCE_STATE_RUNNING {
				return false
			}
		}
		return true
	})
	a := e.rt.Latest("a")
	fmt.Fprintln(a.Stdout(), "output of a")
	logFile := filepath.Join(e.w.cfg.DataDir, logsDir, "a.log")
	if _, err := os.Stat(logFile); err != nil {
		t.Fatalf("no log for a: %v", err)
	}
	if spec := a.Spec(); spec.Artifact.Digest != testDigest || spec.Artifact.Path != filepath.Join(e.w.cfg.DataDir, modulesDir, testDigest[7:]+".wasm") {
		t.Fatalf("started with artifact %+v", spec.Artifact)
	}

	// The next set drops a and adds d: a is stopped and its logs removed,
	// d started, b and c left alone.
	e.cp.setDesired(rec("b", 0), rec("c", 0), rec("d", 0))
	e.waitRunning("d")
	eventually(t, "a stopped", func() bool { return e.cp.status("a").GetState() == pb.InstanceState_INSTANCE_STATE_STOPPED })
	if !a.Stopped() {
		t.Fatal("a exited but was not stopped by the worker")
	}
	if _, err := os.Stat(logFile); !os.IsNotExist(err) {
		t.Fatalf("a's log survived fencing: %v", err)
	}
	if e.workerStatus("a") != nil {
		t.Fatal("the worker still holds a")
	}
	for _, id := range []string{"b", "c", "d"} {
		if n := e.rt.Starts(id); n != 1 {
			t.Fatalf("%s started %d times, want 1", id, n)
		}
	}
	if n := e.rt.Released(testDigest); n != 0 {
		t.Fatalf("module released %d times while instances still use it", n)
	}

	e.cp.setDesired()
	eventually(t, "everything stopped", func() bool { return e.rt.Running() == 0 })
	eventually(t, "module released", func() bool { return e.rt.Released(testDigest) == 1 })

	// An instance re-assigned after being stopped starts afresh.
	e.cp.setDesired(rec("a", 0))
	eventually(t, "a started again", func() bool { return e.rt.Starts("a") == 2 })
}

func TestNewGenerationReplacesTheInstance(t *testing.T) {
	e := startEnv(t, envOptions{})
	e.cp.setDesired(rec("a", 0))
	first := e.waitRunning("a")
	next := rec("a", 0)
	next.Generation = 2
	e.cp.setDesired(next)
	eventually(t, "a restarted at generation 2", func() bool {
		gen := int64(0)
		e.inspect("a", func(in *instance) {
			if in != nil && in.run != nil {
				gen = in.rec.GetGeneration()
			}
		})
		return gen == 2
	})
	if !first.Stopped() || e.rt.Starts("a") != 2 {
		t.Fatalf("generation 1 stopped=%v, starts=%d", first.Stopped(), e.rt.Starts("a"))
	}
}

func TestReconnectKeepsInstancesAndResendsStatus(t *testing.T) {
	e := startEnv(t, envOptions{})
	e.cp.setDesired(rec("a", 0), rec("b", 0), rec("c", 0))
	eventually(t, "RUNNING reported", func() bool {
		return e.cp.status("c").GetState() == pb.InstanceState_INSTANCE_STATE_RUNNING &&
			e.cp.status("a").GetState() == pb.InstanceState_INSTANCE_STATE_RUNNING &&
			e.cp.status("b").GetState() == pb.InstanceState_INSTANCE_STATE_RUNNING
	})

	e.stopCP()
	eventually(t, "session lost", func() bool { return e.w.agentClient() == nil })
	if n := e.rt.Running(); n != 3 {
		t.Fatalf("%d instances running without a control plane, want 3", n)
	}

	// The control plane comes back (with no memory of the reports) and now
	// wants only a and b.
	cp2 := newFakeCP()
	cp2.setDesired(rec("a", 0), rec("b", 0))
	serveCP(t, cp2, e.cpAddr)
	eventually(t, "re-registration", func() bool { return len(cp2.registrations()) > 0 })
	eventually(t, "statuses re-sent", func() bool {
		return cp2.status("a").GetState() == pb.InstanceState_INSTANCE_STATE_RUNNING &&
			cp2.status("b").GetState() == pb.InstanceState_INSTANCE_STATE_RUNNING
	})
	eventually(t, "c fenced", func() bool { return e.rt.Latest("c").Stopped() })
	for _, id := range []string{"a", "b"} {
		if e.rt.Starts(id) != 1 || e.rt.Latest(id).Exited() {
			t.Fatalf("%s was restarted or stopped across the reconnect", id)
		}
	}
}

func TestFailsOverToTheNextServer(t *testing.T) {
	probe, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := probe.Addr().String()
	probe.Close()
	cp := newFakeCP()
	addr, _ := serveCP(t, cp, "")
	e := startEnv(t, envOptions{config: func(c *Config) { c.Servers = []string{dead, addr} }})
	eventually(t, "registration with the second server", func() bool { return len(cp.registrations()) > 0 })
	if len(e.cp.registrations()) != 0 {
		t.Fatal("registered with a server not in the list")
	}
}

func TestCorruptModuleIsNotRunNorCached(t *testing.T) {
	e := startEnv(t, envOptions{fakeTime: true})
	e.cp.mu.Lock()
	e.cp.blobs[testDigest] = []byte("tampered")
	e.cp.mu.Unlock()
	e.cp.setDesired(rec("a", 0))
	// The first retry is immediate; the second waits on the (fake) clock.
	eventually(t, "a retry scheduled", func() bool { return e.clock.hasPending(100 * time.Millisecond) })
	st := e.workerStatus("a")
	if st.GetState() != pb.InstanceState_INSTANCE_STATE_FAILED || st.GetReason() != ReasonFetchError ||
		!strings.Contains(st.GetMessage(), "digest mismatch") || !strings.Contains(st.GetMessage(), "restarting in 100ms") {
		t.Fatalf("status %v", st)
	}
	if e.rt.Starts("a") != 0 {
		t.Fatal("a corrupt module was started")
	}
	entries, _ := os.ReadDir(filepath.Join(e.w.cfg.DataDir, modulesDir))
	if len(entries) != 0 {
		t.Fatalf("module dir holds %d files after a corrupt fetch", len(entries))
	}

	// Once the control plane serves the right bytes, the retry succeeds.
	e.cp.mu.Lock()
	e.cp.blobs[testDigest] = testModule
	e.cp.mu.Unlock()
	e.clock.Advance(100 * time.Millisecond)
	e.waitRunning("a")
	if st := e.workerStatus("a"); st.GetRestarts() != 0 {
		t.Fatalf("fetch retries counted as restarts: %v", st)
	}
}

func TestReconnectRetriesModuleFetchesAtOnce(t *testing.T) {
	e := startEnv(t, envOptions{fakeTime: true})
	e.cp.mu.Lock()
	delete(e.cp.blobs, testDigest)
	e.cp.mu.Unlock()
	e.cp.setDesired(rec("a", 0))
	eventually(t, "a retry scheduled", func() bool { return e.clock.hasPending(100 * time.Millisecond) })
	if st := e.workerStatus("a"); st.GetReason() != ReasonFetchError {
		t.Fatalf("status %v", st)
	}

	e.stopCP()
	cp2 := newFakeCP()
	cp2.setDesired(rec("a", 0))
	serveCP(t, cp2, e.cpAddr)
	e.waitRunning("a") // The fake clock never moves: the new session retried it.
}

func TestInstanceLogsOverGRPC(t *testing.T) {
	e := startEnv(t, envOptions{})
	e.cp.setDesired(rec("a", 0))
	run := e.waitRunning("a")
	var want strings.Builder
	for i := range 5000 { // > one 32 KiB chunk
		fmt.Fprintf(&want, "line %d\n", i)
	}
	io.WriteString(run.Stdout(), want.String())

	cc, err := grpc.NewClient(e.w.Addr(), grpc.WithTransportCredentials(memberToNode(t, "node-a")))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	logs := func(tail int64, ids ...string) map[string]string {
		stream, err := pb.NewWorkerClient(cc).InstanceLogs(context.Background(), &pb.InstanceLogsRequest{Instances: ids, TailBytes: tail})
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for {
			c, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return got
			}
			if err != nil {
				t.Fatal(err)
			}
			got[c.GetInstance()] += string(c.GetData())
		}
	}
	got := logs(0, "unknown", "a")
	if len(got) != 1 || got["a"] != want.String() {
		t.Fatalf("logs: %d instances, a has %d bytes; want only a with %d bytes", len(got), len(got["a"]), want.Len())
	}
	if got := logs(10, "a"); got["a"] != "line 4999\n" {
		t.Fatalf("tail 10 = %q", got["a"])
	}
}

func TestShutdownStopsEveryInstance(t *testing.T) {
	e := startEnv(t, envOptions{})
	e.cp.setDesired(rec("a", 0), rec("b", 0), rec("c", 0))
	for _, id := range []string{"a", "b", "c"} {
		e.waitRunning(id)
	}
	if err := e.stop(); err != nil {
		t.Fatalf("Start returned %v", err)
	}
	if n := e.rt.Running(); n != 0 {
		t.Fatalf("%d instances still running after Start returned", n)
	}
	for _, id := range []string{"a", "b", "c"} {
		if !e.rt.Latest(id).Stopped() || e.rt.Starts(id) != 1 {
			t.Fatalf("%s: stopped=%v starts=%d", id, e.rt.Latest(id).Stopped(), e.rt.Starts(id))
		}
	}
	if !e.rt.Closed() {
		t.Fatal("runtime not closed")
	}
	if c, err := net.DialTimeout("tcp", e.w.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("listener still open")
	}
	if err := e.w.Start(context.Background()); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("second Start = %v, want a failed precondition", err)
	}
}

func TestCloseWithoutStartReleasesEverything(t *testing.T) {
	rt := fakert.New("wasm")
	dataDir := t.TempDir()
	giveNodeCredential(t, dataDir, "n")
	w, err := New(context.Background(), Config{NodeName: "n", DataDir: dataDir, Servers: []string{"127.0.0.1:1"},
		ListenAddr: "127.0.0.1:0", MemoryBytes: 1 << 30, Runtimes: []runtimeapi.Runtime{rt}})
	if err != nil {
		t.Fatal(err)
	}
	addr := w.Addr()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
	if !rt.Closed() {
		t.Fatal("runtime not closed")
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listener not released: %v", err)
	}
	l.Close()
}
