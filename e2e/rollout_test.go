package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
)

// countInstances counts a workload's instances of generation gen in state
// ("" any).
func countInstances(is []instanceJSON, gen int64, state string) (n int) {
	for _, i := range is {
		if i.Generation == gen && (state == "" || i.State == state) {
			n++
		}
	}
	return n
}

// historyRows parses `rollout history` into revision -> change cause.
func historyRows(t *testing.T, out string) map[string]string {
	t.Helper()
	rows := map[string]string{}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], "REVISION") {
		t.Fatalf("rollout history has no header:\n%s", out)
	}
	row := regexp.MustCompile(`^(\d+)( \(current\))?\s+\S+\s+(.*)$`)
	for _, l := range lines[1:] {
		m := row.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("rollout history row %q does not parse:\n%s", l, out)
		}
		rows[m[1]+m[2]] = strings.TrimSpace(m[3])
	}
	return rows
}

// TestRollingUpdateHistoryAndUndo, with automatic rollback off: a rolling update of 4 replicas that
// rollout status follows to the end, its history, and an undo that is
// generation 3 with the first revision's spec; then a rollout to a module
// that fails keeps 3 of 4 old replicas running (25 % unavailable), makes
// rollout status fail with the reason, and is undone.
func TestRollingUpdateHistoryAndUndo(t *testing.T) {
	// Automatic rollback off: the failing rollout stays for undo to fix.
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t), "--rollout-failure-restarts", "0")
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "app", "--replicas", "4", "--env", "V=1")

	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "app", "--replicas", "4", "--env", "V=2", "--no-wait")
	r := c.mustRun("rollout", "status", "app")
	if want := "app rolled out (generation 2): 4/4 ready\n"; r.stdout != want {
		t.Fatalf("rollout status printed %q, want %q\n%s", r.stdout, want, r)
	}
	if !strings.Contains(r.stderr, "app: ") && r.stderr != "" {
		t.Fatalf("rollout status progress on a non-terminal: %q", r.stderr)
	}
	if is := c.instances("app"); len(is) != 4 || countInstances(is, 2, "Running") != 4 {
		t.Fatalf("after rollout status: %s; want 4 Running instances of generation 2", toJSON(is))
	}

	rows := historyRows(t, c.mustRun("rollout", "history", "app").stdout)
	if len(rows) != 2 || rows["1"] != "deploy testdata/ticker.wasm" || rows["2 (current)"] != "deploy testdata/ticker.wasm" {
		t.Fatalf("rollout history: %v; want revisions 1 and 2 (current), caused by deploy", rows)
	}

	r = c.mustRun("rollout", "undo", "app")
	if want := "rolled back app: generation 3\n"; r.stdout != want {
		t.Fatalf("rollout undo printed %q, want %q", r.stdout, want)
	}
	c.mustRun("rollout", "status", "app")
	if d := c.mustRun("describe", "workload", "app").stdout; !regexp.MustCompile(`V=1\b`).MatchString(d) || strings.Contains(d, "V=2") {
		t.Fatalf("after undo the workload is not V=1:\n%s", d)
	}
	if ws := c.workloads(); len(ws) != 1 || ws[0].Generation != 3 || ws[0].Ready != 4 {
		t.Fatalf("after undo: %s; want generation 3 with 4 ready", toJSON(ws))
	}
	rows = historyRows(t, c.mustRun("rollout", "history", "app").stdout)
	if len(rows) != 3 || rows["3 (current)"] != "rollback to revision 1" {
		t.Fatalf("rollout history after undo: %v", rows)
	}

	// A new generation that fails: old instances go only as new ones
	// become ready, so 3 of 4 (max unavailable 25 %) keep running.
	c.mustRun("deploy", "testdata/fail.wasm", "--name", "app", "--replicas", "4", "--no-wait")
	errorLine(t, c.run("rollout", "status", "app"), "exit code 3")
	is := c.instances("app")
	if countInstances(is, 3, "Running") < 3 || countInstances(is, 4, "") > 2 || len(is) > 5 {
		t.Fatalf("during a failing rollout: %s; want at least 3 Running of generation 3, at most 2 of generation 4, at most 5 in all", toJSON(is))
	}
	c.mustRun("rollout", "undo", "app", "--to-revision", "3")
	r = c.mustRun("rollout", "status", "app")
	if want := "app rolled out (generation 5): 4/4 ready\n"; r.stdout != want {
		t.Fatalf("rollout status after undoing the failure printed %q, want %q", r.stdout, want)
	}
	eventually(t, "only generation 5 left", func() (bool, string) {
		is := c.instances("app")
		return len(is) == 4 && countInstances(is, 5, "Running") == 4, toJSON(is)
	})

	// Bad input.
	oneLineError(t, c.run("rollout", "undo", "app", "--to-revision", "99"), "no revision 99")
	oneLineError(t, c.run("rollout", "history", "nope"), `workload "nope" not found`)
	oneLineError(t, c.run("deploy", "testdata/ticker.wasm", "--name", "app", "--max-surge", "lots"), `invalid --max-surge "lots"`)
	oneLineError(t, c.run("deploy", "testdata/ticker.wasm", "--name", "app", "--max-surge", "0", "--max-unavailable", "0%"), "cannot both be 0")
	if ws := c.workloads(); ws[0].Generation != 5 {
		t.Fatalf("refused commands changed the workload: %s", fmt.Sprint(ws))
	}
}

// TestFailedRolloutsAreRolledBackAutomatically: a new generation that
// crash-loops, and one that cannot be placed within the progress
// deadline, are each rolled back to the previous revision as a new
// generation, with a RolledBack event naming the reason.
func TestFailedRolloutsAreRolledBackAutomatically(t *testing.T) {
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t), "--progress-deadline", "1s")
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "app", "--replicas", "4", "--env", "V=1")

	c.mustRun("deploy", "testdata/fail.wasm", "--name", "app", "--replicas", "4", "--no-wait")
	eventually(t, "generation 3, an automatic rollback", func() (bool, string) {
		ws := c.workloads()
		return len(ws) == 1 && ws[0].Generation == 3, toJSON(ws)
	})
	r := c.mustRun("rollout", "status", "app")
	if want := "app rolled out (generation 3): 4/4 ready\n"; r.stdout != want {
		t.Fatalf("rollout status after the automatic rollback printed %q, want %q", r.stdout, want)
	}
	rows := historyRows(t, c.mustRun("rollout", "history", "app").stdout)
	if cause := rows["3 (current)"]; !strings.HasPrefix(cause, "automatic rollback to revision 1: instance app-") || !strings.Contains(cause, "crash-loops") {
		t.Fatalf("rollout history: %v; want revision 3 an automatic rollback of a crash loop", rows)
	}
	d := c.mustRun("describe", "workload", "app").stdout
	if !strings.Contains(d, "RolledBack") || !strings.Contains(d, "rolled back to revision 1 as generation 3") || !regexp.MustCompile(`V=1\b`).MatchString(d) {
		t.Fatalf("describe after the automatic rollback shows no RolledBack event or not V=1:\n%s", d)
	}

	// A generation no node can take: back after the progress deadline.
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "app", "--replicas", "4", "--env", "V=4", "--selector", "zone=nowhere", "--no-wait")
	eventually(t, "generation 5, an automatic rollback", func() (bool, string) {
		ws := c.workloads()
		return len(ws) == 1 && ws[0].Generation == 5, toJSON(ws)
	})
	c.mustRun("rollout", "status", "app")
	rows = historyRows(t, c.mustRun("rollout", "history", "app").stdout)
	if cause := rows["5 (current)"]; !strings.HasPrefix(cause, "automatic rollback to revision 3: instance app-") || !strings.Contains(cause, "not placed within the progress deadline 1s") {
		t.Fatalf("rollout history: %v; want revision 5 an automatic rollback past the progress deadline", rows)
	}
	if d := c.mustRun("describe", "workload", "app").stdout; !regexp.MustCompile(`V=1\b`).MatchString(d) || strings.Contains(d, "nowhere") {
		t.Fatalf("after the second rollback the workload is not generation 3's spec:\n%s", d)
	}
}

// TestRolloutRestartReplacesEveryInstance: `rollout restart` rolls new
// instances of the same spec out as a new generation with its revision.
func TestRolloutRestartReplacesEveryInstance(t *testing.T) {
	c := startUp(t)
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "app", "--replicas", "3", "--env", "V=1")
	before := map[string]bool{}
	for _, i := range c.instances("app") {
		before[i.ID] = true
	}
	r := c.mustRun("rollout", "restart", "app")
	if want := "restarting app: generation 2 replaces every instance; follow it with 'wasmorch rollout status app'\n"; r.stdout != want {
		t.Fatalf("rollout restart printed %q, want %q", r.stdout, want)
	}
	if r := c.mustRun("rollout", "status", "app"); r.stdout != "app rolled out (generation 2): 3/3 ready\n" {
		t.Fatalf("rollout status after restart printed %q", r.stdout)
	}
	eventually(t, "3 new instances of generation 2", func() (bool, string) {
		is := c.instances("app")
		for _, i := range is {
			if before[i.ID] {
				return false, toJSON(is)
			}
		}
		return len(is) == 3 && countInstances(is, 2, "Running") == 3, toJSON(is)
	})
	rows := historyRows(t, c.mustRun("rollout", "history", "app").stdout)
	if rows["2 (current)"] != "rollout restart" {
		t.Fatalf("rollout history: %v; want revision 2 caused by rollout restart", rows)
	}
	if d := c.mustRun("describe", "workload", "app").stdout; !regexp.MustCompile(`V=1\b`).MatchString(d) {
		t.Fatalf("the restart changed the spec:\n%s", d)
	}
	oneLineError(t, c.run("rollout", "restart", "nope"), `workload "nope" not found`)
}
