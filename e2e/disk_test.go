package e2e

import (
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
