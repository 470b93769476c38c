package e2e

import (
	"strings"
	"syscall"
	"testing"

	"github.com/wasmorch/wasmorch/internal/disktest"
)

// TestUpOnAFullDisk: `up` restarted on a disk with no room left for etcd
// ends at once with one line saying so, not with etcd's stack trace.
func TestUpOnAFullDisk(t *testing.T) {
	disk := disktest.Tmpfs(t, 512<<20)
	dataDir := disk + "/wasmorch"
	c := startUpAt(t, dataDir, freeAddr(t), freeAddr(t))
	if code := c.stop(syscall.SIGTERM); code != 0 {
		t.Fatalf("up exited with %d on SIGTERM", code)
	}
	disktest.Fill(t, disk, 0)
	r := run(t, c.env, "up", "--data-dir", dataDir, "--api", freeAddr(t), "--http", freeAddr(t), "--metrics-addr", "")
	oneLineError(t, r, "cannot start the control plane: the disk holding "+dataDir+" has 0 B free")
	errorLine(t, r, "the embedded etcd needs at least 256 MiB; free space on that disk, or give --data-dir a directory on another")
}

// TestDiskPressureAsTheOperatorSeesIt: `up` with its data dir on a small
// disk that fills past --min-free-disk: the node shows DiskPressure in
// `get nodes` and `describe node`, a new workload waits Pending saying
// why while the control plane and what runs keep running, and all of it
// ends once there is room again.
func TestDiskPressureAsTheOperatorSeesIt(t *testing.T) {
	disk := disktest.Tmpfs(t, 512<<20)
	dataDir := disk + "/wasmorch"
	c := startUpAt(t, dataDir, freeAddr(t), freeAddr(t), "--min-free-disk", "160Mi", "--log-budget", "64Mi", "--instance-log-size", "64Ki")
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "before")

	disktest.Fill(t, disk, 120<<20)
	eventually(t, "get nodes showing DiskPressure", func() (bool, string) {
		out := c.mustRun("get", "nodes").stdout
		return strings.Contains(out, "e2e-node   Ready,DiskPressure "), out
	})
	// The condition may have been raised while the fill was under way,
	// with more free then: its message follows the disk at the next check.
	eventually(t, "describe node saying how much is free", func() (bool, string) {
		out := c.mustRun("describe", "node", "e2e-node").stdout
		words := strings.Join(strings.Fields(out), " ")
		return strings.Contains(words, "DiskPressure: the disk holding "+dataDir+"/worker has 120 MiB free of 512 MiB, below the 160 MiB the worker keeps free (for ") &&
			strings.Contains(words, "NodeHasDiskPressure"), out
	})

	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "after", "--no-wait")
	eventually(t, "the new instance Pending for disk pressure", func() (bool, string) {
		out := c.mustRun("get", "instances", "--workload", "after").stdout
		return strings.Contains(out, "Unschedulable: 0/1 nodes fit: 1 disk pressure"), out
	})
	if is := c.instances("before"); len(is) != 1 || is[0].State != "Running" {
		t.Fatalf("the instance running before the pressure: %s", toJSON(is))
	}

	disktest.Unfill(t, disk)
	eventually(t, "get nodes without DiskPressure", func() (bool, string) {
		out := c.mustRun("get", "nodes").stdout
		return strings.Contains(out, "e2e-node   Ready "), out
	})
	eventually(t, "the pending instance running", func() (bool, string) {
		is := c.instances("after")
		return len(is) == 1 && is[0].State == "Running", toJSON(is)
	})
	if !strings.Contains(c.mustRun("describe", "node", "e2e-node").stdout, "NodeHasNoDiskPressure") {
		t.Error("describe node does not show NodeHasNoDiskPressure")
	}
}
