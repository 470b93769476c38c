package e2e

import (
	"fmt"
	"testing"
)

// TestSecondMemberOnADataDirInUse: a second `up` (or `server`) on the data
// dir of a running one fails at once with one line naming the process that
// holds it, instead of waiting forever on etcd's lock of its database.
func TestSecondMemberOnADataDirInUse(t *testing.T) {
	c := startUp(t)
	holder := fmt.Sprintf("is in use by process %d", c.proc.cmd.Process.Pid)
	for _, cmd := range []string{"up", "server"} {
		r := run(t, c.env, cmd, "--data-dir", c.dataDir, "--api", freeAddr(t), "--http", freeAddr(t))
		errorLine(t, r, holder)
	}
	if !c.running() {
		t.Fatal("the running member stopped")
	}
}
