package worker

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/internal/diskspace"
	"github.com/wasmorch/wasmorch/internal/disktest"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// diskPressure is the DiskPressure condition of the latest heartbeat, or
// nil.
func (e *env) diskPressure() *pb.NodeCondition {
	for _, c := range e.cp.heartbeatConditions() {
		if c.GetType() == pb.NodeConditionType_NODE_CONDITION_TYPE_DISK_PRESSURE {
			return c
		}
	}
	return nil
}

func rotatedLogs(t *testing.T, dataDir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dataDir, logsDir, "*.log.1"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// The floor is the larger of the two settings; pressure ends a tenth above
// it, so that what eviction frees does not make it flap.
func TestDiskPressureFollowsTheFreeSpace(t *testing.T) {
	var free atomic.Int64
	free.Store(100 << 30)
	e := startEnv(t, envOptions{
		config: func(c *Config) {
			c.DiskPressureFree = 1 << 30    // 1 GiB
			c.DiskPressureFreePercent = 2   // of 200 GiB: 4 GiB, the floor
			c.LogBytesPerInstance = 8 << 10 // small logs, to see them rotate
		},
		worker: func(w *Worker) {
			w.disk.space = func(string) (diskspace.Space, error) {
				return diskspace.Space{Free: free.Load(), Size: 200 << 30}, nil
			}
			w.diskCheckInterval = time.Millisecond
		},
	})
	eventually(t, "heartbeats", func() bool { return len(e.cp.registrations()) > 0 })
	for i := range 4 {
		l := e.w.logs.Open(fmt.Sprintf("chatty-%d", i))
		for j := range 400 {
			fmt.Fprintf(l, "line %d of a chatty instance\n", j)
		}
	}
	if len(rotatedLogs(t, e.w.cfg.DataDir)) != 4 {
		t.Fatal("setup: want four rotated log segments")
	}

	free.Store(4<<30 - 1) // just below the floor
	eventually(t, "DiskPressure in a heartbeat", func() bool { return e.diskPressure() != nil })
	msg := e.diskPressure().GetMessage()
	if want := "the disk holding " + e.w.cfg.DataDir + " has 4 GiB free of 200 GiB, below the 4 GiB the worker keeps free"; msg != want {
		t.Errorf("condition message %q, want %q", msg, want)
	}
	if got := rotatedLogs(t, e.w.cfg.DataDir); len(got) != 0 {
		t.Errorf("under disk pressure rotated log segments are left: %v", got)
	}

	free.Store(4<<30 + 100<<20) // above the floor, not a tenth above it
	for range 50 {
		e.w.checkDisk()
	}
	if e.w.disk.conditions() == nil {
		t.Fatal("pressure ended just above the floor")
	}
	free.Store(5 << 30)
	eventually(t, "a heartbeat without DiskPressure", func() bool { return e.diskPressure() == nil })
}

// On a real disk: a small tmpfs holding the data dir, filled past the
// floor and emptied again.
func TestDiskPressureOnARealFullDisk(t *testing.T) {
	dir := disktest.Tmpfs(t, 32<<20)
	e := startEnv(t, envOptions{
		config: func(c *Config) {
			c.DataDir = filepath.Join(dir, "worker")
			c.DiskPressureFree = 8 << 20
			c.DiskPressureFreePercent = -1
		},
		worker: func(w *Worker) { w.diskCheckInterval = time.Millisecond },
	})
	eventually(t, "heartbeats", func() bool { return len(e.cp.registrations()) > 0 })
	if e.diskPressure() != nil {
		t.Fatal("DiskPressure on an empty disk")
	}
	disktest.Fill(t, dir, 1<<20)
	eventually(t, "DiskPressure in a heartbeat", func() bool { return e.diskPressure() != nil })
	if msg := e.diskPressure().GetMessage(); !strings.Contains(msg, "the disk holding "+e.w.cfg.DataDir+" has ") || !strings.Contains(msg, "below the 8 MiB the worker keeps free") {
		t.Errorf("condition message %q", msg)
	}
	disktest.Unfill(t, dir)
	eventually(t, "a heartbeat without DiskPressure", func() bool { return e.diskPressure() == nil })
	if _, err := os.Stat(e.w.cfg.DataDir); err != nil {
		t.Fatal(err)
	}
}

// A worker started on a full disk starts (it needs no room to run what it
// runs) and registers with DiskPressure, so that nothing new is placed on
// it from its first moment.
func TestAWorkerStartedOnAFullDiskRegistersUnderPressure(t *testing.T) {
	dir := disktest.Tmpfs(t, 16<<20)
	e := startEnv(t, envOptions{
		config: func(c *Config) {
			c.DataDir = filepath.Join(dir, "worker")
			c.DiskPressureFree = 4 << 20
			c.DiskPressureFreePercent = -1
		},
		worker: func(*Worker) { disktest.Fill(t, dir, 0) },
	})
	eventually(t, "a registration", func() bool { return len(e.cp.registrations()) > 0 })
	conds := e.cp.registrations()[0].GetConditions()
	if len(conds) != 1 || conds[0].GetType() != pb.NodeConditionType_NODE_CONDITION_TYPE_DISK_PRESSURE ||
		!strings.Contains(conds[0].GetMessage(), " has 0 B free of 16 MiB, below the 4 MiB the worker keeps free") {
		t.Fatalf("the first registration on a full disk has conditions %v, want DiskPressure", conds)
	}
}

// A condition that begins or ends is sent at once, in a heartbeat of its
// own, not at the next one: here the control plane asks for a heartbeat
// an hour.
func TestAChangedConditionIsSentAtOnce(t *testing.T) {
	var free atomic.Int64
	free.Store(100 << 30)
	e := startEnv(t, envOptions{
		cp: func(cp *fakeCP) { cp.heartbeatMs = time.Hour.Milliseconds() },
		worker: func(w *Worker) {
			w.disk.space = func(string) (diskspace.Space, error) {
				return diskspace.Space{Free: free.Load(), Size: 200 << 30}, nil
			}
			w.diskCheckInterval = time.Millisecond
		},
	})
	eventually(t, "a registration", func() bool { return len(e.cp.registrations()) > 0 })
	free.Store(1 << 20)
	eventually(t, "DiskPressure in a heartbeat", func() bool { return e.diskPressure() != nil })
	free.Store(100 << 30)
	eventually(t, "a heartbeat without DiskPressure", func() bool { return e.diskPressure() == nil })
}
