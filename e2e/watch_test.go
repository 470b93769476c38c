package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// watcher is a `wasmorch get ... -w` running in the background, its
// output read line by line.
type watcher struct {
	t      *testing.T
	cmd    *exec.Cmd
	lines  chan string
	stderr *bytes.Buffer
	done   chan struct{}
	code   int

	mu  sync.Mutex
	all []string
}

// startWatch starts `get ... -w` against c.
func (c *cluster) startWatch(args ...string) *watcher {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandLimit)
	cmd := exec.CommandContext(ctx, binary, append(append([]string{"get"}, args...), "-w", "--server", c.api)...)
	cmd.Dir, cmd.Env = repoRoot, c.env
	out, err := cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	w := &watcher{t: c.t, cmd: cmd, lines: make(chan string, 1000), stderr: &bytes.Buffer{}, done: make(chan struct{})}
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

// next waits for a line that want accepts, failing the test if the
// watch ends first (or after a safety limit).
func (w *watcher) next(what string, want func(line string) bool) string {
	w.t.Helper()
	limit := time.After(time.Minute)
	for {
		select {
		case l, ok := <-w.lines:
			if !ok {
				w.t.Fatalf("waiting for %s: the watch ended (exit %d): %s\nprinted:\n%s", what, w.code, w.stderr, w.printed())
			}
			if want(l) {
				return l
			}
		case <-limit:
			w.t.Fatalf("waiting for %s: not printed within a minute; printed:\n%s", what, w.printed())
		}
	}
}

func (w *watcher) printed() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.all, "\n")
}

// interrupt sends Ctrl-C and returns the exit code.
func (w *watcher) interrupt() int {
	w.t.Helper()
	if err := w.cmd.Process.Signal(syscall.SIGINT); err != nil {
		w.t.Fatal(err)
	}
	select {
	case <-w.done:
	case <-time.After(stopGrace):
		w.t.Fatalf("get -w did not exit after Ctrl-C")
	}
	return w.code
}

// change is one line of `get -w -o json`.
type change[T any] struct {
	Type   string `json:"type"`
	Object T      `json:"object"`
}

func decodeChange[T any](t *testing.T, line string) change[T] {
	t.Helper()
	var c change[T]
	if err := json.Unmarshal([]byte(line), &c); err != nil {
		t.Fatalf("get -w -o json printed %q, not one change per line: %v", line, err)
	}
	return c
}

// TestGetInstancesWatchSeesAScale: `get instances -w` lists a workload's
// instances, then prints the ones a scale from another command makes;
// Ctrl-C ends it with exit 0.
func TestGetInstancesWatchSeesAScale(t *testing.T) {
	c := startUp(t)
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "ticker", "--replicas", "1")
	first := c.instances("ticker")
	if len(first) != 1 {
		t.Fatalf("ticker has %v, want 1 instance", first)
	}
	w := c.startWatch("instances", "--workload", "ticker", "-o", "json")
	w.next("the listed instance as ADDED", func(l string) bool {
		ch := decodeChange[instanceJSON](t, l)
		return ch.Type == "ADDED" && ch.Object.ID == first[0].ID
	})

	c.mustRun("scale", "ticker", "--replicas", "3")
	seen := map[string]bool{first[0].ID: true}
	w.next("2 new instances of ticker Running", func(l string) bool {
		ch := decodeChange[instanceJSON](t, l)
		if ch.Object.Workload != "ticker" {
			t.Fatalf("a watch of ticker's instances printed %s", l)
		}
		if ch.Type == "MODIFIED" && ch.Object.State == "Running" {
			seen[ch.Object.ID] = true
		}
		return len(seen) == 3
	})
	if code := w.interrupt(); code != 0 {
		t.Errorf("Ctrl-C ended get -w with exit %d, want 0; stderr: %s", code, w.stderr)
	}
}

// TestGetEventsWatchSeesAnEvent: `get events -w` follows what another
// command causes; its table leads with the change.
func TestGetEventsWatchSeesAnEvent(t *testing.T) {
	c := startUp(t)
	w := c.startWatch("events", "--node", "e2e-node")
	w.next("the table header", func(l string) bool { return strings.Fields(l)[0] == "EVENT" })
	c.mustRun("cordon", "e2e-node")
	w.next("NodeCordoned", func(l string) bool {
		f := strings.Fields(l)
		return len(f) > 3 && f[0] == "ADDED" && f[2] == "node/e2e-node" && f[3] == "NodeCordoned"
	})
	c.mustRun("uncordon", "e2e-node")
	w.next("NodeUncordoned", func(l string) bool { return strings.Contains(l, "NodeUncordoned") })
	if code := w.interrupt(); code != 0 {
		t.Errorf("Ctrl-C ended get events -w with exit %d, want 0; stderr: %s", code, w.stderr)
	}
}

// TestGetInstancesPages: with small pages, `get instances` prints every
// instance once, as one JSON array and as one table.
func TestGetInstancesPages(t *testing.T) {
	c := startUp(t)
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "many", "--replicas", "23", "--no-wait")
	eventually(t, "23 instances", func() (bool, string) {
		is := c.instances("many")
		return len(is) == 23, fmt.Sprint(len(is))
	})
	var is []instanceJSON
	c.getJSON(&is, "instances", "--chunk-size", "4")
	ids := map[string]bool{}
	for _, i := range is {
		ids[i.ID] = true
	}
	if len(is) != 23 || len(ids) != 23 {
		t.Errorf("get instances by pages of 4: %d instances, %d distinct; want 23", len(is), len(ids))
	}
	r := c.mustRun("get", "instances", "--chunk-size", "4", "--workload", "many")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 24 || strings.Fields(lines[0])[0] != "ID" {
		t.Errorf("the table by pages of 4 has %d lines, want a header and 23 rows:\n%s", len(lines), r.stdout)
	}
	for _, l := range lines[1:] {
		if strings.Fields(l)[0] == "ID" {
			t.Errorf("a header in the middle of the table:\n%s", r.stdout)
		}
	}
	// WASMORCH_CHUNK_SIZE is read as the flag is.
	env := c.env
	c.env = append(append([]string{}, env...), "WASMORCH_CHUNK_SIZE=5001")
	oneLineError(t, c.run("get", "instances"), "--chunk-size 5001 is out of range")
	c.env = env
}
