package worker

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/internal/fakert"
	"github.com/wasmorch/wasmorch/worker/logstore"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// logBuffer collects a worker's log lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// savedOn reads the state file of the worker in dataDir.
func savedOn(t *testing.T, dataDir string) (savedState, error) {
	t.Helper()
	return readState(filepath.Join(dataDir, stateDir, stateFile))
}

// knownOf is what a saved state says of instance id.
func knownOf(st savedState, id string) *pb.InstanceStatus {
	for _, s := range st.known.GetStatuses() {
		if s.GetId() == id {
			return s
		}
	}
	return nil
}

// TestAgentRestartedWithoutControlPlaneRunsItsSetFromDisk is an agent
// restarted while its control plane is out of reach: it runs the set it
// kept on disk (same IDs, restarts counted on, the job that completed not
// run again, logs kept); when the control plane returns, the session
// resumes from the kept revision and nothing that still matches restarts.
func TestAgentRestartedWithoutControlPlaneRunsItsSetFromDisk(t *testing.T) {
	dir := t.TempDir()
	first := startEnv(t, envOptions{config: func(c *Config) { c.DataDir = dir }, worker: func(w *Worker) { w.persist.interval = 0 }})
	job := rec("job", pb.RestartPolicy_RESTART_POLICY_NEVER)
	first.cp.setDesired(rec("a", 0), job, rec("c", 0))
	run := first.waitRunning("a")
	fmt.Fprintln(run.Stdout(), "a's first run")
	run.Terminate(runtimeapi.Exit{Code: 1, Reason: runtimeapi.ReasonError}) // restarted: 1
	eventually(t, "a restarted", func() bool { return first.rt.Starts("a") == 2 })
	first.waitRunning("a")
	first.waitRunning("job").Terminate(runtimeapi.Exit{Code: 0})
	first.waitRunning("c")
	eventually(t, "job succeeded", func() bool {
		return first.workerStatus("job").GetState() == pb.InstanceState_INSTANCE_STATE_SUCCEEDED
	})
	rev := first.cp.lastSent(t).GetRevision()
	// Written as it goes, not only at shutdown.
	eventually(t, "the set, a's restart and job's end on disk", func() bool {
		st, err := savedOn(t, dir)
		return err == nil && st.set.GetRevision() == rev && len(st.set.GetInstances()) == 3 &&
			knownOf(st, "a").GetRestarts() == 1 && knownOf(st, "job").GetState() == pb.InstanceState_INSTANCE_STATE_SUCCEEDED
	})
	for path, want := range map[string]fs.FileMode{filepath.Join(dir, stateDir): 0o700, filepath.Join(dir, stateDir, stateFile): 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: %v, mode %v; want %v", path, err, fi.Mode().Perm(), want)
		}
	}
	first.stopCP()
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}

	// Restarted with the control plane out of reach.
	logs := &logBuffer{}
	second := startEnv(t, envOptions{config: func(c *Config) {
		c.DataDir = dir
		c.Servers = []string{first.cpAddr}
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}})
	second.waitRunning("a")
	second.waitRunning("c")
	if !strings.Contains(logs.String(), "running the desired set kept on disk") {
		t.Fatalf("the worker did not say it runs the set kept on disk:\n%s", logs)
	}
	var aRestarts, cRestarts int32
	second.inspect("a", func(in *instance) { aRestarts = in.restarts })
	second.inspect("c", func(in *instance) { cRestarts = in.restarts })
	if aRestarts != 2 || cRestarts != 1 {
		t.Fatalf("restarts a=%d c=%d after the agent restarted, want 2 and 1 (counted on, the restart counted)", aRestarts, cRestarts)
	}
	if n := second.rt.Starts("job"); n != 0 {
		t.Fatalf("the job that completed was run again (%d starts)", n)
	}
	if st := second.workerStatus("job"); st.GetState() != pb.InstanceState_INSTANCE_STATE_SUCCEEDED || !st.GetExited() {
		t.Fatalf("job's status after the restart: %v, want its Succeeded kept", st)
	}
	a, err := second.w.logs.Get("a").Read(logstore.ReadOptions{})
	if err != nil || !strings.Contains(string(a), "a's first run") {
		t.Fatalf("a's logs after the restart: %q %v, want its first run's output kept", a, err)
	}

	// The control plane returns, unchanged: the session resumes from the
	// revision kept, and nothing restarts.
	before := len(first.cp.sessionRequests())
	serveCP(t, first.cp, first.cpAddr)
	eventually(t, "a session again", func() bool { return len(first.cp.sessionRequests()) > before })
	if got := first.cp.sessionRequests()[before].GetResumeRevision(); got != rev {
		t.Fatalf("the restarted agent resumed from revision %d, want %d kept on disk", got, rev)
	}
	eventually(t, "a's and job's statuses reported", func() bool {
		return first.cp.status("a").GetRestarts() == 2 && first.cp.status("job").GetState() == pb.InstanceState_INSTANCE_STATE_SUCCEEDED
	})
	// A change after the resume is applied on top of the set from disk.
	first.cp.setDesired(rec("a", 0), job, rec("c", 0), rec("d", 0))
	second.waitRunning("d")
	if second.rt.Starts("a") != 1 || second.rt.Starts("c") != 1 || second.rt.Starts("job") != 0 {
		t.Fatalf("after the control plane returned: starts a=%d c=%d job=%d, want 1, 1, 0", second.rt.Starts("a"), second.rt.Starts("c"), second.rt.Starts("job"))
	}
}

// TestRestoredSetWaitsForAReachableControlPlane: when the control plane
// answers at once, a restarted agent runs what it says, not the set on
// disk: an instance that left the set meanwhile never starts, whether the
// session resumes with a delta or, from a member that does not know the
// kept revision (a stale one), with a full set.
func TestRestoredSetWaitsForAReachableControlPlane(t *testing.T) {
	for _, fresh := range []bool{false, true} {
		t.Run(fmt.Sprintf("full=%v", fresh), func(t *testing.T) {
			dir := t.TempDir()
			first := startEnv(t, envOptions{config: func(c *Config) { c.DataDir = dir }})
			first.cp.setDesired(rec("a", 0), rec("b", 0))
			first.waitRunning("a")
			first.waitRunning("b")
			kept := first.cp.lastSent(t).GetRevision()
			first.stopCP()
			if err := first.stop(); err != nil {
				t.Fatal(err)
			}
			cp := first.cp
			if fresh {
				cp = newFakeCP() // its revisions start far above the one kept
			}
			cp.setDesired(rec("b", 0), rec("c", 0))
			n := len(cp.sentMessages())
			addr, _ := serveCP(t, cp, "")
			second := startEnv(t, envOptions{config: func(c *Config) { c.DataDir = dir; c.Servers = []string{addr} }})
			second.waitRunning("b")
			second.waitRunning("c")
			if msg := cp.nextSent(t, n); msg.GetFull() != fresh {
				t.Fatalf("first message %v: want full=%v", msg, fresh)
			}
			reqs := cp.sessionRequests()
			if got := reqs[len(reqs)-1].GetResumeRevision(); got != kept {
				t.Fatalf("resumed from %d, want %d", got, kept)
			}
			if n := second.rt.Starts("a"); n != 0 {
				t.Fatalf("a, which left the set while the agent was down, started %d times", n)
			}
			if got := second.w.desired.resumeRevision(); got != cp.lastSent(t).GetRevision() {
				t.Fatalf("the worker resumes from %d, want the control plane's %d", got, cp.lastSent(t).GetRevision())
			}
			eventually(t, "the new set on disk", func() bool {
				st, err := savedOn(t, dir)
				return err == nil && slices.Equal(ids(st.set.GetInstances()), []string{"b", "c"})
			})
		})
	}
}

// TestUnreadableStateFileIsIgnored: a torn, corrupt or foreign file is
// said so in one log line and the worker starts empty.
func TestUnreadableStateFileIsIgnored(t *testing.T) {
	valid := func(t *testing.T, dir, node string) []byte {
		t.Helper()
		giveNodeCredential(t, dir, "node-a")
		w := &Worker{cfg: Config{DataDir: dir}}
		pin, err := w.clusterPin()
		if err != nil {
			t.Fatal(err)
		}
		b, err := encodeState(savedState{cluster: pin, node: node, set: &pb.Assignments{Full: true, Revision: 7, Instances: []*pb.Instance{rec("a", 0)}}, known: &pb.StatusBatch{}})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, c := range []struct {
		name, want string
		edit       func(t *testing.T, dir string) []byte
	}{
		{"intact", "restored the desired set kept on disk", func(t *testing.T, dir string) []byte { return valid(t, dir, "node-a") }},
		{"torn", "cannot be read", func(t *testing.T, dir string) []byte { b := valid(t, dir, "node-a"); return b[:len(b)-5] }},
		{"flipped", "does not match its checksum", func(t *testing.T, dir string) []byte {
			b := valid(t, dir, "node-a")
			b[len(b)-3] ^= 0xff
			return b
		}},
		{"garbage", "not a desired-set file", func(*testing.T, string) []byte { return []byte("{\"not\": \"this\"}") }},
		{"empty", "cannot be read", func(*testing.T, string) []byte { return nil }},
		{"another node's", "another node's or another cluster's", func(t *testing.T, dir string) []byte { return valid(t, dir, "node-b") }},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			b := c.edit(t, dir)
			if err := os.MkdirAll(filepath.Join(dir, stateDir), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, stateDir, stateFile), b, 0o600); err != nil {
				t.Fatal(err)
			}
			giveNodeCredential(t, dir, "node-a")
			logs := &logBuffer{}
			cfg := Config{NodeName: "node-a", DataDir: dir, Servers: []string{"127.0.0.1:1"}, ListenAddr: "127.0.0.1:0", MemoryBytes: 1 << 30,
				Runtimes: []runtimeapi.Runtime{fakert.New("wasm")}, Logger: slog.New(slog.NewTextHandler(logs, nil))}
			w, err := New(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			if !strings.Contains(logs.String(), c.want) {
				t.Fatalf("log:\n%s\nwant a line saying %q", logs, c.want)
			}
			_, rev, have := w.desired.snapshot()
			if restored := c.name == "intact"; have != restored || restored && rev != 7 {
				t.Fatalf("after reading the %s file: a set %v (revision %d), want %v", c.name, have, rev, restored)
			}
			if lines := strings.Count(logs.String(), "desired set kept on disk"); lines != 1 {
				t.Fatalf("%d log lines about the file, want 1:\n%s", lines, logs)
			}
		})
	}
}
