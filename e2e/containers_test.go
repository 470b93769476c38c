package e2e

import (
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/internal/ctrtest"
)

// TestContainerDeployLogsDelete deploys an OCI image archive built by the
// test onto `up` with a containerd of the test's own: it runs as a
// container, its output is in the logs, and delete removes its container
// and snapshot.
func TestContainerDeployLogsDelete(t *testing.T) {
	d := ctrtest.Start(t)
	archive := appImage(t)
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t), "--containerd-socket", d.Socket)

	if rts := c.nodeRuntimes()["e2e-node"]; !slices.Contains(rts, "container") || !slices.Contains(rts, "wasm") {
		t.Fatalf("e2e-node offers %v, want wasm and container", rts)
	}

	r := c.mustRun("deploy", archive, "--name", "box", "--memory", "64Mi", "--env", "CONFORMANCE_GREETING=hi", "--", "sleep")
	if !strings.Contains(r.stdout, "deployed box (generation 1): 1/1 ready") {
		t.Errorf("deploy printed %q", r.stdout)
	}
	insts := c.instanceDetails("box")
	if len(insts) != 1 || insts[0].State != "Running" || insts[0].Runtime != "container" {
		t.Fatalf("instances of box = %s, want one Running on the container runtime", toJSON(insts))
	}
	id := insts[0].ID
	wide := c.mustRun("get", "instances", "-o", "wide").stdout
	if !hasRow(wide, id, "box", "e2e-node", "Running") || !strings.Contains(wide, "RUNTIME") || !strings.Contains(wide, "container") {
		t.Errorf("get instances -o wide does not show %s running as a container:\n%s", id, wide)
	}
	if ctrs, _ := leftovers(t, d); !slices.Equal(ctrs, []string{id}) {
		t.Errorf("containerd holds containers %v, want [%s]", ctrs, id)
	}

	eventually(t, "the container's output in the logs", func() (bool, string) {
		logs := c.mustRun("logs", "box").stdout
		return strings.Contains(logs, "sleeping"), logs
	})

	c.mustRun("delete", "box")
	eventually(t, "the container and its snapshot removed", func() (bool, string) {
		ctrs, snaps := leftovers(t, d)
		return len(ctrs) == 0 && len(snaps) == 0, "containers " + strings.Join(ctrs, ",") + " snapshots " + strings.Join(snaps, ",")
	})
	eventually(t, "box's instance gone", func() (bool, string) {
		is := c.instances("")
		return len(is) == 0, toJSON(is)
	})
}

// TestContainerExitCodeAndReason runs a container that exits non-zero
// once: deploy names its exit code, and the instance records it.
func TestContainerExitCodeAndReason(t *testing.T) {
	d := ctrtest.Start(t)
	archive := appImage(t)
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t), "--containerd-socket", d.Socket)

	r := c.run("deploy", archive, "--name", "failing", "--restart", "never", "--", "exit", "3")
	if r.code == 0 {
		// --restart never waits for the start only; the exit follows.
		eventually(t, "the instance to fail", func() (bool, string) {
			is := c.instanceDetails("failing")
			return len(is) == 1 && is[0].State == "Failed", toJSON(is)
		})
	}
	insts := c.instances("failing")
	if len(insts) != 1 || insts[0].ExitCode == nil || *insts[0].ExitCode != 3 {
		t.Fatalf("instances of failing = %s, want one with exitCode 3", toJSON(insts))
	}
	if det := c.instanceDetails("failing"); det[0].Reason != "Error" || det[0].Runtime != "container" {
		t.Errorf("instance = %s, want reason Error on the container runtime", toJSON(det))
	}
	c.mustRun("delete", "failing")
	eventually(t, "the failed container removed", func() (bool, string) {
		ctrs, snaps := leftovers(t, d)
		return len(ctrs) == 0 && len(snaps) == 0, "containers " + strings.Join(ctrs, ",") + " snapshots " + strings.Join(snaps, ",")
	})
}

// TestContainerPendingWithoutContainerd deploys a container workload on a
// node whose containerd socket answers nothing: the node offers only wasm,
// and the instance stays Pending saying why.
func TestContainerPendingWithoutContainerd(t *testing.T) {
	t.Parallel()
	archive := appImage(t)
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t), "--containerd-socket", filepath.Join(t.TempDir(), "no-containerd.sock"))

	if rts := c.nodeRuntimes()["e2e-node"]; !slices.Equal(rts, []string{"wasm"}) {
		t.Fatalf("e2e-node offers %v, want only wasm", rts)
	}
	c.mustRun("deploy", archive, "--name", "nowhere", "--no-wait", "--", "sleep")
	eventually(t, "the container instance Pending with its reason", func() (bool, string) {
		is := c.instanceDetails("nowhere")
		ok := len(is) == 1 && is[0].State == "Pending" && strings.Contains(is[0].Message, "no container runtime")
		return ok, toJSON(is)
	})
	wide := c.mustRun("get", "instances", "--workload", "nowhere", "-o", "wide").stdout
	if !strings.Contains(wide, "no container runtime") || !strings.Contains(wide, "container") {
		t.Errorf("get instances -o wide does not say why nowhere is Pending:\n%s", wide)
	}
	// Wasm workloads are unaffected.
	c.mustRun("deploy", "testdata/hello.wasm", "--name", "hello", "--restart", "on-failure")
}

// TestContainerBadInput refuses what cannot run as a container before
// anything is stored.
func TestContainerBadInput(t *testing.T) {
	t.Parallel()
	c := startUp(t)
	broken := corruptImage(t)
	oneLineError(t, c.run("deploy", broken, "--name", "broken"), "broken-oci.tar is not a valid OCI image archive")
	oneLineError(t, c.run("deploy", "--image", "Not A Reference!", "--name", "bad"), "image reference")
	oneLineError(t, c.run("deploy", "testdata/hello.wasm", "--image", "team/app:1.0"), "not both")
	if ws := c.workloads(); len(ws) != 0 {
		t.Errorf("workloads stored after refused deploys: %s", toJSON(ws))
	}
}

// TestContainerReadoptedAfterAgentKilled kills `up` (SIGKILL: nothing is
// stopped) while a container runs, and starts it again on the same data
// directory: the worker adopts the running container (same process, no
// duplicate, its output still reaching the logs, its restart count kept)
// and removes the container of an instance nobody wants any more.
func TestContainerReadoptedAfterAgentKilled(t *testing.T) {
	d := ctrtest.Start(t)
	archive := appImage(t)
	dataDir, api, http := t.TempDir(), freeAddr(t), freeAddr(t)
	c := startUpAt(t, dataDir, api, http, "--containerd-socket", d.Socket)
	c.mustRun("deploy", archive, "--name", "ticker", "--", "tick")
	id := c.instanceDetails("ticker")[0].ID
	// Killed behind the worker's back once, so that it has restarted.
	if err := syscall.Kill(int(taskPid(t, d, id)), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ticker restarted once", func() (bool, string) {
		is := c.instances("ticker")
		return len(is) == 1 && is[0].State == "Running" && is[0].Restarts == 1, toJSON(is)
	})
	pid := taskPid(t, d, id)
	eventually(t, "ticker's output in the logs", func() (bool, string) {
		logs := c.mustRun("logs", "ticker").stdout
		return strings.Contains(logs, "tick"), logs
	})
	before := strings.Count(c.mustRun("logs", "ticker").stdout, "tick")

	c.stop(syscall.SIGKILL)
	if got := taskPid(t, d, id); got != pid {
		t.Fatalf("the container's process changed while the agent was down: %d, was %d", got, pid)
	}
	ghost := startGhost(t, d, archive)

	restarted := time.Now()
	c = startUpAt(t, dataDir, api, http, "--containerd-socket", d.Socket)
	eventually(t, "ticker running again, adopted, with its restart count", func() (bool, string) {
		is := c.instanceDetails("ticker")
		return len(is) == 1 && is[0].ID == id && is[0].State == "Running" && is[0].StartedAt.After(restarted) && is[0].Restarts == 1, toJSON(is)
	})
	eventually(t, "the unwanted container removed, the wanted one kept", func() (bool, string) {
		ctrs, _ := leftovers(t, d)
		return slices.Equal(ctrs, []string{id}), "containers " + strings.Join(ctrs, ",") + "; ghost " + ghost
	})
	if got := taskPid(t, d, id); got != pid {
		t.Errorf("ticker runs as pid %d after the restart, want the adopted pid %d", got, pid)
	}
	eventually(t, "the adopted container's output in the logs", func() (bool, string) {
		logs := c.mustRun("logs", "ticker").stdout
		return strings.Count(logs, "tick") > before, logs
	})
}

// TestContainerdStoppedNodeStopsOfferingContainers stops containerd under
// a running `up`: the node stops offering the container runtime (so a new
// container workload stays Pending, saying why), and Wasm workloads carry
// on.
func TestContainerdStoppedNodeStopsOfferingContainers(t *testing.T) {
	d := ctrtest.Start(t)
	archive := appImage(t)
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t), "--containerd-socket", d.Socket)
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "ticker")

	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the node no longer offering containers", func() (bool, string) {
		rts := c.nodeRuntimes()["e2e-node"]
		return slices.Equal(rts, []string{"wasm"}), strings.Join(rts, ",")
	})
	c.mustRun("deploy", archive, "--name", "later", "--no-wait", "--", "sleep")
	eventually(t, "the container instance Pending with its reason", func() (bool, string) {
		is := c.instanceDetails("later")
		return len(is) == 1 && is[0].State == "Pending" && strings.Contains(is[0].Message, "no container runtime"), toJSON(is)
	})
	if is := c.instanceDetails("ticker"); len(is) != 1 || is[0].State != "Running" {
		t.Errorf("the wasm workload after containerd stopped: %s", toJSON(is))
	}
	c.mustRun("deploy", "testdata/hello.wasm", "--name", "hello", "--restart", "on-failure")

	// containerd back: the node offers containers again and the waiting
	// instance runs.
	if err := d.Run(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the waiting container instance running once containerd is back", func() (bool, string) {
		is := c.instanceDetails("later")
		return len(is) == 1 && is[0].State == "Running" && is[0].Runtime == "container", toJSON(is)
	})
}

// TestContainerdStartedAfterTheWorker starts `up` before its containerd:
// the node offers only wasm, a container workload waits Pending, and once
// containerd answers the node offers containers and the instance runs.
func TestContainerdStartedAfterTheWorker(t *testing.T) {
	d := ctrtest.Prepare(t)
	archive := appImage(t)
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t), "--containerd-socket", d.Socket)
	if rts := c.nodeRuntimes()["e2e-node"]; !slices.Equal(rts, []string{"wasm"}) {
		t.Fatalf("e2e-node offers %v before containerd runs, want only wasm", rts)
	}
	c.mustRun("deploy", archive, "--name", "early", "--no-wait", "--", "sleep")
	eventually(t, "the container instance Pending", func() (bool, string) {
		is := c.instanceDetails("early")
		return len(is) == 1 && is[0].State == "Pending" && strings.Contains(is[0].Message, "no container runtime"), toJSON(is)
	})

	if err := d.Run(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the container instance running once containerd answers", func() (bool, string) {
		is := c.instanceDetails("early")
		return len(is) == 1 && is[0].State == "Running" && is[0].Runtime == "container", toJSON(is)
	})
	if rts := c.nodeRuntimes()["e2e-node"]; !slices.Contains(rts, "container") {
		t.Errorf("e2e-node offers %v, want container too", rts)
	}
	c.mustRun("delete", "early")
	eventually(t, "the container and its snapshot removed", func() (bool, string) {
		ctrs, snaps := leftovers(t, d)
		return len(ctrs) == 0 && len(snaps) == 0, "containers " + strings.Join(ctrs, ",") + " snapshots " + strings.Join(snaps, ",")
	})
}
