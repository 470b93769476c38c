package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

// slimBuilds are the wasmorch-agent binaries built for the edge tests, by
// target, once per test binary.
var slimBuilds = struct {
	sync.Mutex
	paths map[string]string
}{paths: map[string]string{}}

// agentTags are the build tags make release builds wasmorch-agent with
// (the Makefile's AGENT_TAGS).
const agentTags = "grpcnotrace"

// slimAgent builds wasmorch-agent for linux/goarch (goarm "7" for armv7)
// as make release does: static, stripped, with agentTags.
func slimAgent(t testing.TB, goarch, goarm string) string {
	t.Helper()
	slimBuilds.Lock()
	defer slimBuilds.Unlock()
	target := goarch
	if goarm != "" {
		target += "v" + goarm
	}
	if p, ok := slimBuilds.paths[target]; ok {
		return p
	}
	path := filepath.Join(filepath.Dir(binary), "wasmorch-agent-linux-"+target)
	build := exec.Command("go", "build", "-trimpath", "-tags", agentTags, "-ldflags", "-s -w", "-o", path, "./cmd/wasmorch-agent")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOARM="+goarm)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building wasmorch-agent for linux/%s: %v\n%s", target, err, out)
	}
	slimBuilds.paths[target] = path
	return path
}

// startSlimAgent starts bin (a wasmorch-agent) through wrap (a CPU
// emulator, or nothing) for node name on loopback address ip, with the
// flags startAgent gives `wasmorch agent`, and waits until the node is
// Ready.
func (m *multi) startSlimAgent(name, ip, bin string, wrap []string) *daemon {
	m.t.Helper()
	args := []string{"--server", m.api, "--token", m.joinToken(), "--name", name, "--data-dir", m.t.TempDir(), "--listen", loopbackAddr(m.t, ip)}
	d := startBinary(m.t, "agent-"+name, m.env, bin, wrap, args...)
	m.agents[name] = d
	m.waitNode(name, "Ready")
	return d
}

// runsThere deploys a Wasm command and an HTTP function that may only run
// on nodes of arch, and sees the command run to completion on node and
// the function answer from it through the gateway.
func (m *multi) runsThere(node, arch string) {
	t := m.t
	t.Helper()
	cmdName, fnName := "hello-"+node, "greet-"+node
	m.mustRun("deploy", "testdata/hello.wasm", "--name", cmdName, "--arch", arch, "--restart", "never", "--no-wait", "--", "from", node)
	eventually(t, cmdName+" succeeded on "+node, func() (bool, string) {
		is := m.instances(cmdName)
		return len(is) == 1 && is[0].Node == node && is[0].State == "Succeeded" && is[0].ExitCode != nil && *is[0].ExitCode == 0, toJSON(is)
	})
	if logs := m.mustRun("logs", cmdName).stdout; !strings.Contains(logs, "args: from "+node) {
		t.Errorf("logs %s has no %q:\n%s", cmdName, "args: from "+node, logs)
	}
	m.deployFunction("testdata/greet.wasm", fnName, "/"+node, "--arch", arch, "--env", "GREETING=hi")
	got := m.call(request{path: "/" + node + "?who=" + node})
	expect(t, fnName, got, 200, "hi, "+node+"!")
	for _, in := range m.instances(fnName) {
		if in.Node != node {
			t.Errorf("%s has an instance on %s, want only %s: %s", fnName, in.Node, node, toJSON(in))
		}
	}
}

// TestEdgeAgents runs the slim wasmorch-agent (built as make release
// builds it) beside a native `wasmorch server`: natively, and built for
// arm64 and for armv7 under qemu-user-static's emulators. Each joins with
// the flags and token `wasmorch agent` takes, says that it runs
// WebAssembly only (and, on armv7, where wazero has no compiler, that the
// interpreter runs modules), and runs a Wasm command and a function
// deployed with --arch for it, there and nowhere else. Emulation is slow;
// nothing here asserts how fast anything is.
func TestEdgeAgents(t *testing.T) {
	t.Parallel()
	m := startServer(t)
	agents := []struct {
		node, goarch, goarm, qemu, runtimes string
	}{
		{"slim", runtime.GOARCH, "", "", "runtimes: wasm)"},
		{"pi-arm64", "arm64", "", "qemu-aarch64-static", "runtimes: wasm)"},
		{"pi-armv7", "arm", "7", "qemu-arm-static", "runtimes: wasm (interpreter))"},
	}
	var joined []string
	for i, a := range agents {
		var wrap []string
		if a.qemu != "" {
			qemu, err := exec.LookPath(a.qemu)
			if err != nil {
				t.Logf("skipping %s: %s is not installed (Debian: apt-get install qemu-user-static): %v", a.node, a.qemu, err)
				continue
			}
			wrap = []string{qemu}
		}
		d := m.startSlimAgent(a.node, fmt.Sprintf("127.0.0.%d", 21+i), slimAgent(t, a.goarch, a.goarm), wrap)
		if n := m.nodes()[a.node]; n.Arch != a.goarch {
			t.Errorf("node %s reports arch %q, want %q", a.node, n.Arch, a.goarch)
		}
		out, err := os.ReadFile(d.log)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"wasmorch-agent ", " is up", a.runtimes, "container runtime not offered: this binary runs WebAssembly only"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("%s's output has no %q:\n%s", a.node, want, out)
			}
		}
		joined = append(joined, a.node)
	}
	for _, a := range agents {
		if slices.Contains(joined, a.node) {
			m.runsThere(a.node, a.goarch)
		}
	}
	if len(joined) < len(agents) {
		t.Skipf("ran only %v: qemu-user-static is missing for the others", joined)
	}
}
