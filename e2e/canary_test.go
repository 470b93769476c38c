package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// canaryLoad sends n GET requests for path through the gateway, from a
// few clients at once, each bounded by a timeout, and counts the answers
// by body; failed holds what went wrong with the others.
func (c *cluster) canaryLoad(path string, n int) (answers map[string]int, failed []string) {
	const clients = 4
	answers = map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += clients {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				rep, err := c.do(ctx, request{path: path})
				cancel()
				mu.Lock()
				switch {
				case err != nil:
					failed = append(failed, err.Error())
				case rep.status != 200:
					failed = append(failed, fmt.Sprintf("%d %q", rep.status, rep.body))
				default:
					answers[strings.TrimSpace(rep.body)]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return answers, failed
}

// TestCanaryTrafficSplitAndPromotion: a function of 4 replicas answering
// v1 gets a new revision answering v2 with a 25% canary: deploy and
// rollout status stop at the ready canary, the gateway sends it about a
// quarter of the requests with none failing, and after 'rollout promote'
// the rollout completes and only v2 answers. A rollback during a canary
// does not wait as one.
func TestCanaryTrafficSplitAndPromotion(t *testing.T) {
	c := startUp(t)
	deploy := func(greeting string, flags ...string) result {
		t.Helper()
		return c.mustRun(append([]string{"deploy", "testdata/greet.wasm", "--name", "greet", "--route", "/greet", "--replicas", "4",
			"--env", "GREETING=" + greeting}, flags...)...)
	}
	deploy("v1")
	c.waitRouted("/greet", "")

	held := "greet: canary of generation 2 ready (1 replica, 25% of traffic); promote with 'wasmorch rollout promote greet' or roll back with 'wasmorch rollout undo greet'\n"
	if r := deploy("v2", "--canary", "25%"); !strings.HasSuffix(r.stdout, held) {
		t.Fatalf("deploy --canary printed %q, want it to end with %q", r.stdout, held)
	}
	if r := c.mustRun("rollout", "status", "greet"); r.stdout != held {
		t.Fatalf("rollout status printed %q, want %q", r.stdout, held)
	}
	if is := c.instances("greet"); len(is) != 5 || countInstances(is, 1, "Running") != 4 || countInstances(is, 2, "Running") != 1 {
		t.Fatalf("during the canary: %s; want the 4 old instances Running and 1 of generation 2", toJSON(is))
	}
	d := c.mustRun("describe", "workload", "greet").stdout
	if !strings.Contains(d, "25% of the traffic for a new generation, promoted by 'wasmorch rollout promote'") ||
		!strings.Contains(d, "canary of generation 2: 1/1 ready") || !strings.Contains(d, "waiting for promotion") {
		t.Fatalf("describe during the canary shows no canary waiting for promotion:\n%s", d)
	}

	// The gateway's table follows the cluster a moment after the canary
	// is ready.
	eventually(t, "the canary answers", func() (bool, string) {
		rep := c.call(request{path: "/greet?who=probe"})
		return rep.body == "v2, probe!\n", fmt.Sprintf("%d %q", rep.status, rep.body)
	})
	const requests = 400
	answers, failed := c.canaryLoad("/greet", requests)
	if len(failed) > 0 {
		t.Fatalf("%d of %d requests failed during the canary, e.g. %s", len(failed), requests, failed[0])
	}
	v1, v2 := answers["v1, world!"], answers["v2, world!"]
	if v1+v2 != requests || v2 < requests*15/100 || v2 > requests*35/100 {
		t.Fatalf("answers during a 25%% canary: %v; want only v1 and v2, v2 about a quarter (15%%..35%%)", answers)
	}
	t.Logf("during the 25%% canary: %d v1, %d v2", v1, v2)

	if r := c.mustRun("rollout", "promote", "greet"); r.stdout != "promoted greet: generation 2 rolls out to every replica\n" {
		t.Fatalf("rollout promote printed %q", r.stdout)
	}
	if r := c.mustRun("rollout", "status", "greet"); r.stdout != "greet rolled out (generation 2): 4/4 ready\n" {
		t.Fatalf("rollout status after promote printed %q", r.stdout)
	}
	// An old replica may answer a moment after the rollout is recorded done.
	eventually(t, "only v2 answers", func() (bool, string) {
		answers, failed := c.canaryLoad("/greet", 40)
		return answers["v2, world!"] == 40, fmt.Sprintf("%v, failed %v", answers, failed)
	})
	if answers, failed := c.canaryLoad("/greet", 100); answers["v2, world!"] != 100 {
		t.Fatalf("after the rollout: %v, failed %v; want only v2", answers, failed)
	}
	if d := c.mustRun("describe", "workload", "greet").stdout; !strings.Contains(d, "CanaryPromoted") || !strings.Contains(d, "promoted by 'rollout promote'") {
		t.Fatalf("describe after promote shows no CanaryPromoted event:\n%s", d)
	}

	// Bad input: one line, and nothing changes.
	oneLineError(t, c.run("rollout", "promote", "greet"), "generation 2 is already promoted")
	oneLineError(t, c.run("rollout", "promote", "nope"), `workload "nope" not found`)
	for _, tc := range []struct{ canary, want string }{
		{"0%", `invalid --canary: "0%" is outside 1%..99%`},
		{"150%", `invalid --canary: "150%" is outside 1%..99%`},
		{"abc", `invalid --canary: "abc" is not a percentage`},
	} {
		oneLineError(t, c.run("deploy", "testdata/greet.wasm", "--name", "greet", "--route", "/greet", "--replicas", "4",
			"--env", "GREETING=v3", "--canary", tc.canary), tc.want)
	}
	oneLineError(t, c.run("deploy", "testdata/ticker.wasm", "--name", "tick", "--canary", "10%"), "--canary is only for HTTP functions")
	if ws := c.workloads(); len(ws) != 1 || ws[0].Generation != 2 {
		t.Fatalf("refused commands changed the workloads: %s", toJSON(ws))
	}

	// A canary of generation 3, undone: generation 4 rolls out without
	// waiting as a canary, and only v2 answers again.
	deploy("v3", "--canary", "25%")
	r := c.mustRun("rollout", "undo", "greet")
	if r.stdout != "rolled back greet: generation 4\n" {
		t.Fatalf("rollout undo printed %q", r.stdout)
	}
	if r := c.mustRun("rollout", "status", "greet"); r.stdout != "greet rolled out (generation 4): 4/4 ready\n" {
		t.Fatalf("rollout status after undoing a canary printed %q", r.stdout)
	}
	eventually(t, "only v2 answers after the undo", func() (bool, string) {
		answers, failed := c.canaryLoad("/greet", 40)
		return answers["v2, world!"] == 40, fmt.Sprintf("%v, failed %v", answers, failed)
	})
}

// TestCanaryWithADurationPromotesItself: with --canary-duration, deploy
// follows the canary until the control plane promotes it and the rollout
// completes, with a CanaryPromoted event.
func TestCanaryWithADurationPromotesItself(t *testing.T) {
	c := startUp(t)
	c.deployFunction("testdata/greet.wasm", "fast", "/fast", "--replicas", "2", "--env", "GREETING=v1")
	r := c.mustRun("deploy", "testdata/greet.wasm", "--name", "fast", "--route", "/fast", "--replicas", "2", "--env", "GREETING=v2",
		"--canary", "50%", "--canary-duration", "1s")
	if !strings.HasSuffix(r.stdout, "deployed fast (generation 2): 2/2 ready\n") {
		t.Fatalf("deploy with a canary duration printed %q, want it to follow the rollout to the end", r.stdout)
	}
	if is := c.instances("fast"); countInstances(is, 2, "Running") != 2 {
		t.Fatalf("after deploy: %s; want 2 Running instances of generation 2", toJSON(is))
	}
	d := c.mustRun("describe", "workload", "fast").stdout
	if !strings.Contains(d, "CanaryPromoted") || !strings.Contains(d, "was available for 1s") || strings.Contains(d, "waiting for promotion") {
		t.Fatalf("describe shows no CanaryPromoted event after the duration:\n%s", d)
	}
	oneLineError(t, c.run("rollout", "promote", "fast"), "generation 2 is already promoted")
	eventually(t, "only v2 answers", func() (bool, string) {
		answers, failed := c.canaryLoad("/fast", 20)
		return answers["v2, world!"] == 20, fmt.Sprintf("%v, failed %v", answers, failed)
	})
}
