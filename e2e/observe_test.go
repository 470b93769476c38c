package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startCommand runs a wasmorch command against c in the background (a
// `logs -f`), its stdout read line by line, as startWatch does for `get -w`.
func (c *cluster) startCommand(args ...string) *watcher {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandLimit)
	cmd := exec.CommandContext(ctx, binary, append(args, "--server", c.api)...)
	cmd.Dir, cmd.Env = repoRoot, c.env
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	w := &watcher{t: c.t, cmd: cmd, lines: make(chan string, 10000), stderr: &bytes.Buffer{}, done: make(chan struct{})}
	cmd.Stderr = w.stderr
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			w.mu.Lock()
			w.all = append(w.all, sc.Text())
			w.mu.Unlock()
			w.lines <- sc.Text()
		}
		close(w.lines)
		_ = cmd.Wait()
		w.code = cmd.ProcessState.ExitCode()
		cancel()
		close(w.done)
	}()
	c.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-w.done
	})
	return w
}

// tickOf is the number a ticker line carries ("tick 12", maybe after an
// instance prefix), or -1.
func tickOf(line string) int {
	f := strings.Fields(line)
	if len(f) < 2 || f[len(f)-2] != "tick" {
		return -1
	}
	n, err := strconv.Atoi(f[len(f)-1])
	if err != nil {
		return -1
	}
	return n
}

// TestLogsFollowPrintsNewLinesNewInstancesAndTheEnd: `logs -f --tail 1`
// starts with one kept line, then prints the lines the instance writes
// after it started; an instance a scale adds is followed too (its lines
// prefixed by its ID); deleting the workload ends the follow with a line
// saying so, and exit 0.
func TestLogsFollowPrintsNewLinesNewInstancesAndTheEnd(t *testing.T) {
	c := startUp(t)
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "ticker", "--replicas", "1")
	first := c.instances("ticker")[0].ID
	eventually(t, "ticker has printed a few lines", func() (bool, string) {
		r := c.mustRun("logs", "ticker", "--tail", "3")
		return strings.Count(r.stdout, "tick") == 3, r.stdout
	})

	f := c.startCommand("logs", "ticker", "-f", "--tail", "1")
	kept := f.next("the one kept line", func(l string) bool { return tickOf(l) > 0 })
	n := tickOf(kept)
	f.next("a line written after the follow started", func(l string) bool {
		if strings.HasPrefix(l, "[") {
			return false
		}
		if m := tickOf(l); m != -1 && m <= n {
			t.Fatalf("after tick %d the follow printed %q again or out of order\n%s", n, l, f.printed())
		}
		return tickOf(l) > n+2
	})

	c.mustRun("scale", "ticker", "--replicas", "2")
	var second string
	eventually(t, "a second instance", func() (bool, string) {
		for _, in := range c.instances("ticker") {
			if in.ID != first {
				second = in.ID
			}
		}
		return second != "", ""
	})
	f.next("a line of the new instance, with its ID", func(l string) bool {
		return strings.HasPrefix(l, "["+second+"] ") && tickOf(l) > 0
	})

	c.mustRun("delete", "ticker")
	select {
	case <-f.done:
	case <-time.After(time.Minute):
		t.Fatalf("logs -f went on after the workload was deleted\n%s", f.printed())
	}
	if f.code != 0 {
		t.Errorf("logs -f ended with exit %d, want 0; stderr: %s", f.code, f.stderr)
	}
	if got := strings.TrimSpace(f.stderr.String()); got != "wasmorch logs: workload ticker was deleted" {
		t.Errorf("stderr at the end = %q, want the line saying the workload was deleted", got)
	}
}

// TestLogsByLinesAndOneInstance: --tail counts lines, never cuts one,
// and --instance prints one instance's lines without a prefix.
func TestLogsByLinesAndOneInstance(t *testing.T) {
	c := startUp(t)
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "ticker", "--replicas", "2")
	is := c.instances("ticker")
	eventually(t, "both instances have printed", func() (bool, string) {
		r := c.mustRun("logs", "ticker", "--tail", "2")
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		return len(lines) == 4, r.stdout
	})
	r := c.mustRun("logs", "ticker", "--tail", "2")
	for _, l := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		if !strings.HasPrefix(l, "[ticker-") || tickOf(l) < 1 {
			t.Errorf("logs --tail 2 printed %q, not a whole prefixed line", l)
		}
	}
	var lines []string
	eventually(t, "the first instance has printed 5 lines", func() (bool, string) {
		one := c.mustRun("logs", "ticker", "--instance", is[0].ID, "--tail", "5", "--timestamps")
		lines = strings.Split(strings.TrimSpace(one.stdout), "\n")
		if len(lines) > 5 {
			t.Fatalf("--tail 5 printed %d lines:\n%s", len(lines), one.stdout)
		}
		return len(lines) == 5, one.stdout
	})
	for _, l := range lines {
		ts, rest, _ := strings.Cut(l, " ")
		if _, err := time.Parse(time.RFC3339Nano, ts); err != nil || strings.HasPrefix(rest, "[") || tickOf(rest) < 1 {
			t.Errorf("--instance --timestamps printed %q", l)
		}
	}
	if r := c.mustRun("logs", "ticker", "--since", "1h"); strings.Count(r.stdout, "tick") < 4 {
		t.Errorf("--since 1h printed too little:\n%s", r.stdout)
	}
	errorLine(t, c.run("logs", "ticker", "--since", "yesterday"), `invalid --since "yesterday"`)
	errorLine(t, c.run("logs", "ticker", "--instance", "nope"), `instance "nope" of workload "ticker" not found`)
}

// TestLabelsSelectYamlRoundTripsAndDeleteTakesSeveral: workloads carry
// labels (deploy --labels, a manifest's metadata.labels) that `get -l`
// selects by on the server; `get workloads NAME -o yaml` is a manifest that
// `apply -f` takes back unchanged; apply takes several files and a
// directory; delete takes several names and -f.
func TestLabelsSelectYamlRoundTripsAndDeleteTakesSeveral(t *testing.T) {
	c := startUp(t)
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "front", "--labels", "app=shop,tier=front", "--memory", "2Mi",
		"--env", "Z=1", "--env", "A=2", "--max-surge", "2", "--no-wait")
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "back", "--labels", "app=shop,tier=back", "--no-wait")
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "other", "--no-wait")

	names := func(args ...string) string {
		var ws []workloadJSON
		c.getJSON(&ws, append([]string{"workloads"}, args...)...)
		var out []string
		for _, w := range ws {
			out = append(out, w.Name)
		}
		return strings.Join(out, ",")
	}
	for sel, want := range map[string]string{
		"app=shop":            "back,front",
		"app=shop,tier!=back": "front",
		"!app":                "other",
		"tier":                "back,front",
		"app=none":            "",
	} {
		if got := names("-l", sel); got != want {
			t.Errorf("get workloads -l %s = %q, want %q", sel, got, want)
		}
	}
	var is []instanceJSON
	c.getJSON(&is, "instances", "-l", "tier=back")
	for _, in := range is {
		if in.Workload != "back" {
			t.Errorf("get instances -l tier=back listed %s of %s", in.ID, in.Workload)
		}
	}
	oneLineError(t, c.run("get", "workloads", "-l", "app=,=x"), "invalid -l")

	// The YAML of a workload applies back unchanged, and edited it applies.
	dir := t.TempDir()
	y := c.mustRun("get", "workloads", "front", "-o", "yaml").stdout
	for _, want := range []string{"apiVersion: wasmorch.dev/v1", "kind: Workload", "memory: 2Mi", "maxSurge: \"2\"", "tier: front", "status:"} {
		if !strings.Contains(y, want) {
			t.Errorf("get -o yaml lacks %q:\n%s", want, y)
		}
	}
	writeFile(t, dir+"/front.yaml", y)
	if r := c.mustRun("apply", "-f", dir+"/front.yaml"); strings.TrimSpace(r.stdout) != "workload/front unchanged" {
		t.Fatalf("applying get -o yaml back: %q, want unchanged\n%s", r.stdout, y)
	}
	before := c.workloads()
	writeFile(t, dir+"/front.yaml", strings.Replace(y, "tier: front", "tier: edge", 1))
	if r := c.mustRun("apply", "-f", dir+"/front.yaml"); strings.TrimSpace(r.stdout) != "workload/front configured" {
		t.Fatalf("applying a label change: %q", r.stdout)
	}
	for _, w := range c.workloads() {
		for _, b := range before {
			if w.Name == "front" && b.Name == "front" && w.Generation != b.Generation {
				t.Errorf("a label change made generation %d from %d", w.Generation, b.Generation)
			}
		}
	}
	if got := names("-l", "tier=edge"); got != "front" {
		t.Errorf("after relabelling, -l tier=edge = %q", got)
	}

	// Several files and a directory, then delete -f and delete A B.
	writeFile(t, dir+"/m/one.yaml", "apiVersion: wasmorch.dev/v1\nkind: Config\nmetadata: {name: cfg-one}\ndata: {A: \"1\"}\n")
	writeFile(t, dir+"/m/two.yml", "apiVersion: wasmorch.dev/v1\nkind: Config\nmetadata: {name: cfg-two}\ndata: {B: \"2\"}\n")
	writeFile(t, dir+"/three.yaml", "apiVersion: wasmorch.dev/v1\nkind: Config\nmetadata: {name: cfg-three}\ndata: {C: \"3\"}\n")
	r := c.mustRun("apply", "-f", dir+"/m", "-f", dir+"/three.yaml")
	for _, want := range []string{"config/cfg-one created", "config/cfg-two created", "config/cfg-three created"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("apply of a directory and a file printed:\n%s\nwant %q", r.stdout, want)
		}
	}
	oneLineError(t, c.run("apply", "-f", dir+"/m", "-f", dir+"/m/one.yaml"), "config/cfg-one is defined twice")
	if r := c.mustRun("delete", "-f", dir+"/m"); !strings.Contains(r.stdout, "deleted config/cfg-one") || !strings.Contains(r.stdout, "deleted config/cfg-two") {
		t.Errorf("delete -f DIR printed %q", r.stdout)
	}
	if r := c.mustRun("delete", "back", "other"); r.stdout != "deleted back\ndeleted other\n" {
		t.Errorf("delete back other printed %q", r.stdout)
	}
	r = c.run("delete", "front", "nope")
	if r.code == 0 || !strings.Contains(r.stdout, "deleted front") || !strings.Contains(r.stderr, `workload "nope" not found`) {
		t.Errorf("delete front nope: want front deleted and nope reported\n%s", r)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
