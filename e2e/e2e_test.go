package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// TestDeployScaleDelete is the newcomer's tour: deploy three replicas of
// hello, see them, read their output, scale down, delete.
func TestDeployScaleDelete(t *testing.T) {
	t.Parallel()
	c := startUp(t)

	r := c.mustRun("deploy", "testdata/hello.wasm", "--name", "hello", "--replicas", "3", "--restart", "on-failure")
	if !strings.Contains(r.stdout, "deployed hello (generation 1): 3/3 ready") {
		t.Errorf("deploy printed %q", r.stdout)
	}

	table := c.mustRun("get", "workloads").stdout
	if !hasRow(table, "hello", "3/3", "3", "3", "1", "wasm") {
		t.Errorf("get workloads does not show hello 3/3:\n%s", table)
	}
	if y := c.mustRun("get", "wl", "-o", "yaml").stdout; !strings.Contains(y, "name: hello") || !strings.Contains(y, "ready: 3") {
		t.Errorf("get wl -o yaml:\n%s", y)
	}

	var nodes []nodeJSON
	c.getJSON(&nodes, "nodes")
	if len(nodes) != 1 || nodes[0].Name != "e2e-node" || nodes[0].State != "Ready" {
		t.Fatalf("nodes = %s, want the one Ready node e2e-node", toJSON(nodes))
	}
	insts := c.instances("")
	if len(insts) != 3 {
		t.Fatalf("%d instances, want 3: %s", len(insts), toJSON(insts))
	}
	for _, in := range insts {
		if in.Workload != "hello" || in.Node != "e2e-node" || (in.State != "Running" && in.State != "Succeeded") {
			t.Errorf("instance %s", toJSON(in))
		}
		if in.State == "Succeeded" && (in.ExitCode == nil || *in.ExitCode != 0) {
			t.Errorf("succeeded instance without exitCode 0: %s", toJSON(in))
		}
	}

	logs := c.mustRun("logs", "hello").stdout
	if !strings.Contains(logs, "hello from wasmorch") {
		t.Errorf("logs hello:\n%s", logs)
	}
	for _, in := range insts {
		if !strings.Contains(logs, "["+in.ID+"] hello from wasmorch") {
			t.Errorf("logs hello has no line prefixed with [%s]:\n%s", in.ID, logs)
		}
	}

	if r := c.mustRun("scale", "hello", "--replicas", "1"); !strings.Contains(r.stdout, "scaled hello to 1") {
		t.Errorf("scale printed %q", r.stdout)
	}
	eventually(t, "hello scaled down to one instance", func() (bool, string) {
		is := c.instances("hello")
		return len(is) == 1, toJSON(is)
	})

	if r := c.mustRun("delete", "hello"); strings.TrimSpace(r.stdout) != "deleted hello" {
		t.Errorf("delete printed %q", r.stdout)
	}
	eventually(t, "hello and its instances gone", func() (bool, string) {
		ws, is := c.workloads(), c.instances("")
		return len(ws) == 0 && len(is) == 0, toJSON(ws) + " " + toJSON(is)
	})
}

// TestRestartAfterKillRestoresWorkloads kills `up` with SIGKILL and starts
// it again on the same data dir: the workload comes back from etcd and
// its instances run again.
func TestRestartAfterKillRestoresWorkloads(t *testing.T) {
	t.Parallel()
	c := startUp(t)
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "ticker", "--replicas", "2")
	starts := tickersRunning(t, c, 2, 0)
	c.stop(syscall.SIGKILL)

	c = startUpAt(t, c.dataDir, c.api, c.http)
	tickersRunning(t, c, 2, starts)
}

// TestCleanShutdownExitsZeroAndRestartRestores stops `up` with SIGTERM and
// then SIGINT: both exit 0, and each restart brings the workload back.
func TestCleanShutdownExitsZeroAndRestartRestores(t *testing.T) {
	t.Parallel()
	c := startUp(t)
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "ticker", "--replicas", "2")
	starts := tickersRunning(t, c, 2, 0)
	if code := c.stop(syscall.SIGTERM); code != 0 {
		t.Errorf("up exited %d after SIGTERM, want 0", code)
	}

	c = startUpAt(t, c.dataDir, c.api, c.http)
	starts = tickersRunning(t, c, 2, starts)
	if code := c.stop(syscall.SIGINT); code != 0 {
		t.Errorf("up exited %d after SIGINT, want 0", code)
	}

	c = startUpAt(t, c.dataDir, c.api, c.http)
	tickersRunning(t, c, 2, starts)
}

// tickStart matches the first line a ticker prints each time it starts.
var tickStart = regexp.MustCompile(`(?m)\btick 1$`)

// tickersRunning waits until the ticker workload is back with n running
// instances and each of them has printed since: the logs hold at least
// n more starts ("tick 1") than the before seen earlier (instance logs
// outlive restarts, so lines printed before a restart prove nothing). It
// returns the starts counted.
func tickersRunning(t *testing.T, c *cluster, n, before int) int {
	t.Helper()
	eventually(t, fmt.Sprintf("ticker back with %d running instances", n), func() (bool, string) {
		ws, is := c.workloads(), c.instances("ticker")
		running := 0
		for _, in := range is {
			if in.State == "Running" {
				running++
			}
		}
		ok := len(ws) == 1 && ws[0].Name == "ticker" && ws[0].Ready == n && running == n
		return ok, toJSON(ws) + " " + toJSON(is)
	})
	starts := 0
	eventually(t, fmt.Sprintf("%d tickers start printing", n), func() (bool, string) {
		r := c.run("logs", "ticker")
		starts = len(tickStart.FindAllString(r.stdout, -1))
		return r.code == 0 && starts >= before+n, fmt.Sprintf("%d starts, want %d or more: %s", starts, before+n, r)
	})
	return starts
}

// TestBadInputIsRefusedAndNothingIsCreated checks each kind of bad input:
// a non-zero exit, one line on stderr, and no workload stored.
func TestBadInputIsRefusedAndNothingIsCreated(t *testing.T) {
	t.Parallel()
	c := startUp(t)
	c.mustRun("deploy", "testdata/hello.wasm", "--name", "existing", "--replicas", "0")
	before := c.mustRun("get", "workloads", "-o", "json").stdout

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"garbage module", []string{"deploy", "testdata/garbage.wasm"}, "testdata/garbage.wasm is not a valid WebAssembly module"},
		{"truncated module", []string{"deploy", "testdata/truncated.wasm"}, "testdata/truncated.wasm is not a valid WebAssembly module"},
		{"missing file", []string{"deploy", "testdata/missing.wasm"}, "cannot read testdata/missing.wasm"},
		{"invalid name", []string{"deploy", "testdata/hello.wasm", "--name", "Hello_World"}, `"Hello_World"`},
		{"negative replicas", []string{"deploy", "testdata/hello.wasm", "--replicas", "-1"}, "--replicas -1"},
		{"memory that is not a size", []string{"deploy", "testdata/hello.wasm", "--memory", "lots"}, `"lots" is not a size`},
		{"unknown restart policy", []string{"deploy", "testdata/hello.wasm", "--restart", "sometimes"}, `"sometimes"`},
		{"an import no node provides", []string{"deploy", "testdata/badimport.wasm"}, "cannot run as Wasm: import env.does_not_exist is not provided by the wasm runtime"},
		{"a memory limit below the module's", []string{"deploy", "testdata/hello.wasm", "--memory", "64Ki"}, "needs 128 KiB of initial memory, more than its memory limit of 64 KiB"},
		{"logs of an unknown workload", []string{"logs", "nope"}, `workload "nope" not found; see 'wasmorch get workloads'`},
		{"scale of an unknown workload", []string{"scale", "nope", "--replicas", "2"}, `workload "nope" not found`},
		{"scale without --replicas", []string{"scale", "existing"}, "--replicas"},
		{"delete of an unknown workload", []string{"delete", "nope"}, `workload "nope" not found`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := c.with(t)
			oneLineError(t, c.run(tc.args...), tc.want)
			if after := c.mustRun("get", "workloads", "-o", "json").stdout; after != before {
				t.Errorf("workloads changed:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// TestDeployOutcomes covers how deploy ends for modules that exit: a
// failing one fails the deploy naming its exit code, and restart policy
// never succeeds once the instance has started.
func TestDeployOutcomes(t *testing.T) {
	t.Parallel()
	c := startUp(t)

	t.Run("a failing module fails the deploy with its exit code", func(t *testing.T) {
		c := c.with(t)
		r := c.run("deploy", "testdata/fail.wasm")
		errorLine(t, r, "exit code 3")
		if !strings.Contains(r.stderr, "instance fail-") || !strings.Contains(r.stderr, "wasmorch logs fail") {
			t.Errorf("stderr does not name the instance and the logs command: %q", r.stderr)
		}
		if logs := c.mustRun("logs", "fail").stdout; !strings.Contains(logs, "fail: exiting with code 3") {
			t.Errorf("logs fail:\n%s", logs)
		}
	})

	t.Run("restart never succeeds once started, with env and args", func(t *testing.T) {
		c := c.with(t)
		r := c.mustRun("deploy", "testdata/hello.wasm", "--name", "once", "--restart", "never", "--env", "GREETING=hi", "--", "ana", "bob")
		if !strings.Contains(r.stdout, "deployed once (generation 1): 1/1") {
			t.Errorf("deploy printed %q", r.stdout)
		}
		eventually(t, "once succeeded with exit code 0", func() (bool, string) {
			is := c.instances("once")
			return len(is) == 1 && is[0].State == "Succeeded" && is[0].ExitCode != nil && *is[0].ExitCode == 0, toJSON(is)
		})
		logs := c.mustRun("logs", "once").stdout
		for _, want := range []string{"hello from wasmorch", "args: ana bob", "GREETING=hi"} {
			if !strings.Contains(logs, want) {
				t.Errorf("logs once has no %q:\n%s", want, logs)
			}
		}
	})

	t.Run("deploying again changes the generation", func(t *testing.T) {
		c := c.with(t)
		c.mustRun("deploy", "testdata/hello.wasm", "--name", "gen", "--replicas", "2", "--restart", "on-failure")
		r := c.mustRun("deploy", "testdata/hello.wasm", "--name", "gen", "--replicas", "2", "--restart", "on-failure", "--env", "GREETING=again")
		if !strings.Contains(r.stdout, "deployed gen (generation 2): 2/2 ready") {
			t.Errorf("redeploy printed %q", r.stdout)
		}
		for _, in := range c.instances("gen") {
			if in.Generation != 2 {
				t.Errorf("an instance of generation %d is left after the rollout: %s", in.Generation, toJSON(in))
			}
		}
	})
}

// TestWithoutAServer checks that client commands fail fast with what to do
// when nothing listens at --server or WASMORCH_SERVER, and that version
// still answers.
func TestWithoutAServer(t *testing.T) {
	t.Parallel()
	addr := freeAddr(t)
	env := cliEnv(t)
	for _, args := range [][]string{
		{"deploy", "testdata/hello.wasm", "--server", addr},
		{"get", "workloads", "--server", addr},
		{"logs", "hello", "--server", addr},
		{"delete", "hello", "--server", addr},
	} {
		oneLineError(t, run(t, env, args...), "cannot reach the wasmorch server at "+addr+" (connection refused); is 'wasmorch up' running?")
	}

	// The address can come from the environment instead of the flag.
	oneLineError(t, run(t, cliEnv(t, "WASMORCH_SERVER="+addr), "get", "nodes"), "cannot reach the wasmorch server at "+addr)

	r := run(t, env, "version", "--server", addr)
	if r.code != 0 || !strings.Contains(r.stdout, "client: ") || !strings.Contains(r.stdout, "server: unknown") {
		t.Errorf("version without a server: %s", r)
	}
}

// hasRow reports whether a table has a row starting with these cells.
func hasRow(table string, cells ...string) bool {
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) >= len(cells) && strings.Join(f[:len(cells)], " ") == strings.Join(cells, " ") {
			return true
		}
	}
	return false
}
