package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// member is one `wasmorch server` of a multi-member control plane.
type member struct {
	name, api, http, peer, dataDir string
	proc                           *daemon
}

// memberJSON is an object of `members -o json`.
type memberJSON struct {
	Name             string `json:"name"`
	State            string `json:"state"`
	Leader           bool   `json:"leader"`
	ControllerLeader bool   `json:"controllerLeader"`
	APIAddress       string `json:"apiAddress"`
	Error            string `json:"error"`
}

// haCluster is three control-plane members and the agents joined to all
// of them, each process on its own loopback address.
type haCluster struct {
	t           testing.TB
	env         []string
	members     []*member
	serverToken string // a server join token, which admits agents too
}

func startHACluster(t *testing.T) *haCluster { return startHAClusterTB(t) }

func startHAClusterTB(t testing.TB, extra ...string) *haCluster {
	t.Helper()
	h := &haCluster{t: t, env: cliEnv(t)}
	for i := 1; i <= 3; i++ {
		ip := fmt.Sprintf("127.0.0.%d", 30+i)
		m := &member{name: fmt.Sprintf("cp%d", i), api: loopbackAddr(t, ip), http: loopbackAddr(t, ip), peer: loopbackAddr(t, ip), dataDir: t.TempDir()}
		args := []string{"server", "--name", m.name, "--data-dir", m.dataDir, "--api", m.api, "--http", m.http, "--metrics-addr", loopbackAddr(t, ip), "--peer", m.peer}
		args = append(args, extra...)
		if i == 1 {
			args = append(args, "--init")
		} else {
			var join []string
			for _, o := range h.members {
				join = append(join, o.api)
			}
			if h.serverToken == "" {
				h.serverToken = joinToken(t, h.env, h.members[0].api, "--role", "server")
			}
			args = append(args, "--join", strings.Join(join, ","), "--token", h.serverToken)
		}
		m.proc = startDaemon(t, m.name, h.env, args...)
		h.members = append(h.members, m)
		h.waitHealthy(len(h.members))
	}
	return h
}

// servers is the --server list of every member.
func (h *haCluster) servers() string {
	var s []string
	for _, m := range h.members {
		s = append(s, m.api)
	}
	return strings.Join(s, ",")
}

// run runs a client command against every member (the CLI picks one that
// answers).
func (h *haCluster) run(args ...string) result {
	h.t.Helper()
	return run(h.t, h.env, append(args, "--server", h.servers())...)
}

func (h *haCluster) mustRun(args ...string) result {
	h.t.Helper()
	r := h.run(args...)
	if r.code != 0 {
		h.t.Fatalf("%s", r)
	}
	return r
}

// membersSeenBy lists the members as the member at api sees them.
func (h *haCluster) membersSeenBy(api string) ([]memberJSON, result) {
	r := run(h.t, h.env, "members", "-o", "json", "--server", api)
	var ms []memberJSON
	if r.code == 0 {
		if err := json.Unmarshal([]byte(r.stdout), &ms); err != nil {
			h.t.Fatalf("members -o json: %v\n%s", err, r)
		}
	}
	return ms, r
}

// waitHealthy waits until the last member started sees n healthy members
// and a controller leader.
func (h *haCluster) waitHealthy(n int) {
	h.t.Helper()
	api := h.members[len(h.members)-1].api
	eventually(h.t, fmt.Sprintf("%d healthy members with a leader", n), func() (bool, string) {
		ms, r := h.membersSeenBy(api)
		healthy, leader := 0, false
		for _, m := range ms {
			if m.State == "Healthy" {
				healthy++
			}
			leader = leader || m.ControllerLeader
		}
		return healthy == n && leader, r.String()
	})
}

// controllerLeader is the member running the controllers, as seen by the
// member at api.
func (h *haCluster) controllerLeader(api string) (*member, string) {
	ms, r := h.membersSeenBy(api)
	for _, m := range ms {
		if m.ControllerLeader && m.State == "Healthy" {
			for _, mm := range h.members {
				if mm.name == m.Name {
					return mm, r.String()
				}
			}
		}
	}
	return nil, r.String()
}

// TestControlPlaneSurvivesLosingItsLeader: three members and an agent;
// kill -9 the leader during a stream of deploys and scale calls. Every
// call that succeeded is in the state afterwards, a new leader schedules,
// the killed member catches up when restarted, and with two of three
// gone the API refuses clearly.
func TestControlPlaneSurvivesLosingItsLeader(t *testing.T) {
	h := startHACluster(t)
	agent := startDaemon(t, "agent", h.env, "agent", "--server", h.servers(), "--token", h.serverToken, "--name", "ha-node",
		"--data-dir", t.TempDir(), "--listen", loopbackAddr(t, "127.0.0.40"), "--functions-listen", loopbackAddr(t, "127.0.0.40"))
	eventually(t, "the agent's node Ready", func() (bool, string) {
		r := h.run("get", "nodes")
		return r.code == 0 && hasRow(r.stdout, "ha-node", "Ready"), r.String()
	})
	h.mustRun("deploy", "testdata/ticker.wasm", "--name", "base", "--replicas", "2")
	h.mustRun("deploy", "testdata/greet.wasm", "--name", "greet", "--route", "/greet", "--env", "GREETING=hi")

	leader, seen := h.controllerLeader(h.members[0].api)
	if leader == nil {
		t.Fatalf("no controller leader: %s", seen)
	}

	// A stream of writes, with the leader killed in the middle of it.
	acked := map[string]bool{}
	scaledTo := -1
	for i := range 12 {
		if i == 4 {
			leader.proc.stop(syscall.SIGKILL)
		}
		name := fmt.Sprintf("w%d", i)
		if r := h.run("deploy", "testdata/ticker.wasm", "--name", name, "--no-wait"); r.code == 0 {
			acked[name] = true
		}
		if r := h.run("scale", "base", "--replicas", fmt.Sprint(1+i%3)); r.code == 0 {
			scaledTo = 1 + i%3
		}
	}
	if len(acked) < 8 {
		t.Fatalf("only %d of 12 deploys succeeded with two of three members up: %v", len(acked), acked)
	}

	// A new leader took over and schedules: a deploy becomes ready.
	var survivor *member
	for _, m := range h.members {
		if m != leader {
			survivor = m
			break
		}
	}
	eventually(t, "a new controller leader", func() (bool, string) {
		l, seen := h.controllerLeader(survivor.api)
		return l != nil && l != leader, seen
	})
	h.mustRun("deploy", "testdata/ticker.wasm", "--name", "after", "--replicas", "2")
	// Every surviving member's gateway still answers the function.
	for _, m := range h.members {
		if m == leader {
			continue
		}
		eventually(t, "the function through "+m.name+"'s gateway", func() (bool, string) {
			return gatewayGet(t, "http://"+m.http+"/greet?who=ha")
		})
	}

	// The killed member comes back and catches up.
	leader.proc.start()
	h.waitHealthy(3)
	eventually(t, "every acknowledged write on the restarted member", func() (bool, string) {
		r := run(t, h.env, "get", "workloads", "-o", "json", "--server", leader.api)
		if r.code != 0 {
			return false, r.String()
		}
		var ws []workloadJSON
		if err := json.Unmarshal([]byte(r.stdout), &ws); err != nil {
			t.Fatalf("get workloads -o json: %v\n%s", err, r)
		}
		have := map[string]workloadJSON{}
		for _, w := range ws {
			have[w.Name] = w
		}
		for name := range acked {
			if _, ok := have[name]; !ok {
				return false, "missing " + name + ": " + r.stdout
			}
		}
		if scaledTo > 0 && have["base"].Replicas != scaledTo {
			return false, fmt.Sprintf("base has %d replicas, the last acknowledged scale was to %d", have["base"].Replicas, scaledTo)
		}
		_, ok := have["after"]
		return ok, r.stdout
	})
	eventually(t, "base and after at their replicas", func() (bool, string) {
		var ws []workloadJSON
		r := h.run("get", "workloads", "-o", "json")
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ws) != nil {
			return false, r.String()
		}
		ok := 0
		for _, w := range ws {
			if (w.Name == "base" || w.Name == "after") && w.Ready == w.Replicas {
				ok++
			}
		}
		return ok == 2, r.stdout
	})

	// Lose two of three: the last member refuses, clearly, and the agent
	// keeps its instances running without a control plane.
	pems := t.TempDir()
	if r := run(t, h.env, "credentials", "export", "--dir", pems, "--server", h.members[2].api); r.code != 0 {
		t.Fatalf("credentials export: %s", r)
	}
	if st, err := healthCheck(t, pems, h.members[2].api); err != nil || st != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("the health of a member with quorum: %v %v, want SERVING", st, err)
	}
	before := startTimes(t, h.run("get", "instances", "--workload", "base", "-o", "json"))
	last := h.members[2]
	for _, m := range h.members[:2] {
		m.proc.stop(syscall.SIGKILL)
	}
	eventually(t, "writes refused without quorum", func() (bool, string) {
		r := run(t, h.env, "scale", "base", "--replicas", "3", "--server", last.api)
		return r.code != 0 && strings.Contains(r.stderr, "no etcd leader") && strings.Count(r.stderr, "\n") == 1, r.String()
	})
	// A probe without a certificate learns it from the standard health
	// service (observe).
	if st, err := healthCheck(t, pems, last.api); err != nil || st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("the health of the member without quorum: %v %v, want NOT_SERVING", st, err)
	}
	if !agent.running() {
		t.Fatal("the agent exited when the control plane lost quorum")
	}

	// A majority again: the same instances, never restarted, are there.
	h.members[0].proc.start()
	eventually(t, "base's instances as they were, running all along", func() (bool, string) {
		r := run(t, h.env, "get", "instances", "--workload", "base", "-o", "json", "--server", last.api)
		if r.code != 0 {
			return false, r.String()
		}
		after := startTimes(t, r)
		if len(after) != len(before) {
			return false, fmt.Sprintf("before %v, now %v", before, after)
		}
		for id, at := range before {
			if after[id] != at {
				return false, fmt.Sprintf("before %v, now %v", before, after)
			}
		}
		return true, ""
	})
}

// gatewayGet reports whether GET url answered 200 with the greeting.
func gatewayGet(t *testing.T, url string) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), requestLimit)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == http.StatusOK && strings.Contains(string(b), "hi"), fmt.Sprintf("%d %s", resp.StatusCode, b)
}

// startTimes maps each Running instance in `get instances -o json` to its
// start time and restart count.
func startTimes(t *testing.T, r result) map[string]string {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	var is []struct {
		ID        string `json:"id"`
		State     string `json:"state"`
		Restarts  int    `json:"restarts"`
		StartedAt string `json:"startedAt"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &is); err != nil {
		t.Fatalf("get instances -o json: %v\n%s", err, r)
	}
	out := map[string]string{}
	for _, i := range is {
		if i.State == "Running" {
			out[i.ID] = fmt.Sprintf("%s/%d", i.StartedAt, i.Restarts)
		}
	}
	return out
}

// TestSnapshotSaveAndRestore: snapshot a running all-in-one, restore it
// into a fresh data dir, and the workloads come back there.
func TestSnapshotSaveAndRestore(t *testing.T) {
	c := startUp(t)
	c.mustRun("deploy", "testdata/ticker.wasm", "--name", "kept", "--replicas", "2")
	snap := filepath.Join(t.TempDir(), "backup.db")
	r := c.mustRun("snapshot", "save", snap)
	if !strings.Contains(r.stdout, "saved "+snap) {
		t.Fatalf("snapshot save said: %s", r)
	}
	c.stop(syscall.SIGTERM)

	restored := filepath.Join(t.TempDir(), "restored")
	r = run(t, c.env, "snapshot", "restore", snap, "--data-dir", restored, "--name", "e2e-node")
	if r.code != 0 {
		t.Fatalf("%s", r)
	}
	// Restoring over a member's data is refused.
	oneLineError(t, run(t, c.env, "snapshot", "restore", snap, "--data-dir", restored, "--name", "e2e-node"), "already holds a member's state")
	// A snapshot that is not one is refused.
	oneLineError(t, run(t, c.env, "snapshot", "restore", "testdata/hello.wasm", "--data-dir", t.TempDir(), "--name", "x"), "restore testdata/hello.wasm")

	c2 := startUpAt(t, restored, freeAddr(t), freeAddr(t))
	eventually(t, "the restored workload ready", func() (bool, string) {
		for _, w := range c2.workloads() {
			if w.Name == "kept" && w.Replicas == 2 && w.Ready == 2 {
				return true, ""
			}
		}
		return false, toJSON(c2.workloads())
	})
}

// TestStaticInitialClusterAndMemberRemoval: three members started at once
// with the same --initial-cluster form one cluster; removing one leaves
// two healthy members that still accept writes.
func TestStaticInitialClusterAndMemberRemoval(t *testing.T) {
	env := cliEnv(t)
	caDir := filepath.Join(t.TempDir(), "cluster-ca")
	if r := run(t, env, "ca", "create", "--dir", caDir); r.code != 0 || !strings.Contains(r.stdout, "created the cluster CA") {
		t.Fatalf("%s", r)
	}
	var ms []*member
	var initial []string
	for i := 1; i <= 3; i++ {
		ip := fmt.Sprintf("127.0.0.%d", 50+i)
		m := &member{name: fmt.Sprintf("s%d", i), api: loopbackAddr(t, ip), http: loopbackAddr(t, ip), peer: loopbackAddr(t, ip), dataDir: t.TempDir()}
		ms = append(ms, m)
		scheme := "https://"
		if i == 3 {
			scheme = "http://" // read as https://, for scripts written before peers spoke TLS
		}
		initial = append(initial, m.name+"="+scheme+m.peer)
	}
	h := &haCluster{t: t, env: env, members: ms}
	for _, m := range ms {
		m.proc = startDaemon(t, m.name, env, "server", "--name", m.name, "--data-dir", m.dataDir, "--api", m.api,
			"--http", m.http, "--metrics-addr", "127.0.0.1:0", "--peer", m.peer, "--initial-cluster", strings.Join(initial, ","), "--ca-dir", caDir)
	}
	h.waitHealthy(3)

	// Refused: a member name that is not there, a bad bootstrap list, and
	// a static bootstrap without the shared CA.
	oneLineError(t, h.run("member", "remove", "nope"), `no control-plane member named "nope"`)
	oneLineError(t, run(t, env, "server", "--name", "x", "--data-dir", t.TempDir(), "--peer", "127.0.0.1:1", "--ca-dir", caDir, "--initial-cluster", "y=https://127.0.0.1:1"), `does not name this member "x"`)
	oneLineError(t, run(t, env, "server", "--name", "x", "--data-dir", t.TempDir(), "--peer", "127.0.0.1:1", "--initial-cluster", "x=https://127.0.0.1:1"), `wasmorch ca create --dir DIR`)

	// etcd refuses to reconfigure a cluster whose members have not all
	// been connected for 5 s; that refusal says to try again.
	eventually(t, "member remove s3 accepted", func() (bool, string) {
		r := h.run("member", "remove", "s3")
		if r.code != 0 && !strings.Contains(r.stderr, "try again") {
			t.Fatalf("%s", r)
		}
		return r.code == 0, r.String()
	})
	eventually(t, "s3 gone and two healthy members", func() (bool, string) {
		seen, r := h.membersSeenBy(ms[0].api)
		healthy := 0
		for _, m := range seen {
			if m.Name == "s3" {
				return false, r.stdout
			}
			if m.State == "Healthy" {
				healthy++
			}
		}
		return healthy == 2, r.stdout
	})
	h.members = ms[:2]
	h.mustRun("deploy", "testdata/hello.wasm", "--name", "two-left", "--no-wait")
}
