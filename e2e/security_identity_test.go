package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Node identity (issue 13): a removed node's certificate is revoked, a
// node's name is bound to it, labels come from the join token or an
// admin, and a node fetches and reports only what is its own.

// copyPKI copies an agent's credential, as an attacker holding the node
// would keep it.
func copyPKI(t *testing.T, dataDir string) string {
	t.Helper()
	dst := t.TempDir()
	for _, f := range []string{"ca.crt", "node.crt", "node.key"} {
		b, err := os.ReadFile(filepath.Join(dataDir, "pki", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dst, "pki"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, "pki", f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// agentExit waits until agent d has exited and returns the last line of
// what it printed.
func agentExit(t *testing.T, d *daemon) (int, string) {
	t.Helper()
	select {
	case <-d.proc.done:
	case <-time.After(stopGrace):
		t.Fatalf("agent %s still runs", d.name)
	}
	out, err := os.ReadFile(d.log)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return d.proc.exitCode, lines[len(lines)-1]
}

// TestRemovedNodeIsRevoked: `node rm --force` revokes the node's
// certificates: the session open with it ends, the running agent is
// refused and stops with a one-line reason instead of registering the
// node again, the certificate stays refused whoever presents it, and the
// agent comes back only by joining again with a token.
func TestRemovedNodeIsRevoked(t *testing.T) {
	t.Parallel()
	m := startServer(t)
	d := m.startAgent("rv1", "127.0.0.71", "")
	dataDir := argAfter(d.args, "--data-dir")
	m.mustRun("secret", "set", "rv-secret", "PASSWORD=hunter2")
	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "rv", "--from-secret", "rv-secret")
	kept := copyPKI(t, dataDir)

	// A second session with the node's certificate, as a copy of the node
	// would hold: it receives the node's set (with the secret) until the
	// removal.
	// Bounded: before revocation existed, this session went on forever.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := nodeConn(t, m.api, kept)
	sess, err := v1.NewAgentClient(conn).Session(ctx, &v1.SessionRequest{Node: "rv1"})
	if err != nil {
		t.Fatal(err)
	}
	first, err := sess.Recv()
	if err != nil || len(first.GetInstances()) != 1 {
		t.Fatalf("the node's session before removal: %v %v", first, err)
	}

	r := m.mustRun("node", "rm", "rv1", "--force")
	if !strings.Contains(r.stdout, "node rv1 removed") {
		t.Errorf("node rm printed %q", r.stdout)
	}
	// The open session ends, saying why.
	for err == nil {
		_, err = sess.Recv()
	}
	wantCode(t, "the session open before the removal", err, codes.Unauthenticated, "was revoked")
	// The agent stops, with one line saying why and what to do.
	code, last := agentExit(t, d)
	if code == 0 || !strings.HasPrefix(last, "error: ") || !strings.Contains(last, "was revoked") || !strings.Contains(last, "--token") {
		t.Errorf("the removed node's agent exited %d with %q, want a one-line error saying its certificate was revoked and to join with a token", code, last)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "pki", "node.crt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the agent kept its revoked certificate: %v", err)
	}
	// The node stays removed: nothing registers it again.
	if ns := m.nodes(); len(ns) != 0 {
		t.Errorf("nodes after rm: %s", toJSON(ns))
	}
	// The certificate is refused for every call, whoever presents it.
	agentAPI := v1.NewAgentClient(nodeConn(t, m.api, kept))
	_, err = agentAPI.Register(ctx, &v1.RegisterRequest{Node: &v1.Node{Name: "rv1", Arch: runtime.GOARCH, Os: runtime.GOOS}})
	wantCode(t, "Register with the revoked certificate", err, codes.Unauthenticated, "was revoked")
	_, err = agentAPI.RenewCertificate(ctx, &v1.RenewRequest{})
	wantCode(t, "RenewCertificate with the revoked certificate", err, codes.Unauthenticated, "was revoked")
	if ns := m.nodes(); len(ns) != 0 {
		t.Errorf("a revoked certificate registered a node: %s", toJSON(ns))
	}
	eventually(t, "rv Pending, with no node to run on", func() (bool, string) {
		is := m.instances("rv")
		return len(is) == 1 && is[0].State == "Pending", toJSON(is)
	})

	// Started again with a token, it joins again and gets its work back.
	d.start()
	m.waitNode("rv1", "Ready")
	eventually(t, "rv Running on the rejoined node", func() (bool, string) {
		is := m.instances("rv")
		return len(is) == 1 && is[0].State == "Running" && is[0].Node == "rv1", toJSON(is)
	})
}

// TestJoinBindsTheNameAndTokensAreBound: a node's name, once joined, is
// its own whether it is Ready or not; tokens may admit one name, a number
// of joins, and a name taken over by an admin's token revokes the old
// certificates.
func TestJoinBindsTheNameAndTokensAreBound(t *testing.T) {
	t.Parallel()
	m := startServer(t)
	agent := func(token, name string) result {
		return run(t, m.env, "agent", "--server", m.api, "--token", token, "--name", name, "--data-dir", t.TempDir(), "--listen", loopbackAddr(t, "127.0.0.72"))
	}
	d := m.startAgent("bn1", "127.0.0.73", "")
	kept := copyPKI(t, argAfter(d.args, "--data-dir"))
	d.stop(syscall.SIGTERM)
	m.waitNode("bn1", "NotReady")
	// NotReady, its name is still its own.
	errorLine(t, agent(m.joinToken(), "bn1"), "node bn1 has joined already")

	// A token for one name, once.
	once := joinToken(t, m.env, m.api, "--node", "bn2", "--uses", "1")
	errorLine(t, agent(once, "bn3"), "admits node bn2 only")
	m.startAgentWith("bn2", "127.0.0.74", once)
	errorLine(t, agent(once, "bn2"), "is used up (1 of 1 joins)")
	if r := m.mustRun("token", "list"); !hasCells(r.stdout, "agent", "bn2", "-", "1/1") {
		t.Errorf("token list does not show the token for bn2 used once of once:\n%s", r.stdout)
	}

	// An admin's token for bn1's name takes it over: the old certificate
	// is refused from then on.
	m.startAgentWith("bn1", "127.0.0.75", joinToken(t, m.env, m.api, "--node", "bn1", "--uses", "1"))
	_, err := v1.NewAgentClient(nodeConn(t, m.api, kept)).Heartbeat(context.Background(), &v1.HeartbeatRequest{Node: "bn1"})
	wantCode(t, "the replaced certificate of bn1", err, codes.Unauthenticated, "was revoked")
}

// hasCells reports whether a table has a row holding these cells one
// after the other.
func hasCells(table string, cells ...string) bool {
	for _, line := range strings.Split(table, "\n") {
		if strings.Contains(" "+strings.Join(strings.Fields(line), " ")+" ", " "+strings.Join(cells, " ")+" ") {
			return true
		}
	}
	return false
}

// startAgentWith starts an agent that joins with token, and waits until
// its node is Ready.
func (m *multi) startAgentWith(name, ip, token string, extra ...string) *daemon {
	m.t.Helper()
	args := append([]string{"agent", "--server", m.api, "--token", token, "--name", name, "--data-dir", m.t.TempDir(), "--listen", loopbackAddr(m.t, ip)}, extra...)
	d := startDaemon(m.t, "agent-"+name, m.env, args...)
	m.agents[name] = d
	m.waitNode(name, "Ready")
	return d
}

// TestLabelsComeFromTheTokenOrAnAdmin: an agent's own --labels do not
// place workloads: refused at its join beyond what its token allows,
// ignored when it restarts with others, so that it does not receive the
// workloads (and secrets) of a zone it names itself; an admin's label
// does place them.
func TestLabelsComeFromTheTokenOrAnAdmin(t *testing.T) {
	t.Parallel()
	m := startServer(t)
	m.startAgentWith("la", "127.0.0.76", joinToken(t, m.env, m.api, "--labels", "zone=a"))
	nb := m.startAgentWith("lb", "127.0.0.77", m.joinToken())
	if ns := m.nodes(); ns["la"].Labels["zone"] != "a" || len(ns["lb"].Labels) != 0 {
		t.Errorf("labels: la %v (want zone=a, from its token), lb %v (want none)", ns["la"].Labels, ns["lb"].Labels)
	}
	r := run(t, m.env, "agent", "--server", m.api, "--token", m.joinToken(), "--name", "lc", "--labels", "zone=b", "--data-dir", t.TempDir(), "--listen", loopbackAddr(t, "127.0.0.78"))
	errorLine(t, r, "does not allow label zone=b")
	chosen := joinToken(t, m.env, m.api, "--labels", "zone=*,tier=edge")
	m.startAgentWith("ld", "127.0.0.79", chosen, "--labels", "zone=d")
	if l := m.nodes()["ld"].Labels; l["zone"] != "d" || l["tier"] != "edge" {
		t.Errorf("ld's labels are %v, want zone=d (chosen) and tier=edge (the token's)", l)
	}

	m.mustRun("secret", "set", "zb-secret", "PASSWORD=zone-b-only")
	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "zb", "--selector", "zone=b", "--from-secret", "zb-secret", "--no-wait")
	// lb's agent restarts claiming zone b.
	nb.stop(syscall.SIGTERM)
	nb.args = append(withoutFlag(nb.args, "--token"), "--labels", "zone=b")
	nb.start()
	m.waitNode("lb", "Ready")
	if l := m.nodes()["lb"].Labels; len(l) != 0 {
		t.Errorf("lb's restarted agent changed its labels to %v", l)
	}
	// Its own desired set, as its certificate reads it: nothing of zb.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := v1.NewAgentClient(nodeConn(t, m.api, argAfter(nb.args, "--data-dir"))).Session(ctx, &v1.SessionRequest{Node: "lb"})
	if err != nil {
		t.Fatal(err)
	}
	set, err := sess.Recv()
	if err != nil || len(set.GetInstances()) != 0 {
		t.Errorf("lb's desired set: %v %v, want empty", set, err)
	}
	is := m.instancesWithReasons("zb")
	if len(is) != 1 || is[0].State != "Pending" {
		t.Errorf("zb: %s, want one instance Pending (no zone=b node)", toJSON(is))
	}
	out, _ := os.ReadFile(nb.log)
	if !strings.Contains(string(out), "not all in effect") {
		t.Errorf("lb's agent does not warn that its --labels are not applied:\n%s", out)
	}

	// An admin labels it: now zb goes there.
	if r := m.mustRun("node", "label", "lb", "zone=b"); !strings.Contains(r.stdout, "node lb labeled: zone=b") {
		t.Errorf("node label printed %q", r.stdout)
	}
	eventually(t, "zb Running on lb", func() (bool, string) {
		is := m.instances("zb")
		return len(is) == 1 && is[0].State == "Running" && is[0].Node == "lb", toJSON(is)
	})
	m.mustRun("node", "label", "lb", "zone-")
	if l := m.nodes()["lb"].Labels; len(l) != 0 {
		t.Errorf("after 'node label lb zone-': %v", l)
	}
}

// TestNodeFetchesAndReportsOnlyItsOwn: a node may fetch the blobs of its
// own instances only, and its registration changes what it observes of
// itself, not its labels or its architecture.
func TestNodeFetchesAndReportsOnlyItsOwn(t *testing.T) {
	t.Parallel()
	m := startServer(t)
	m.startAgent("fa", "127.0.0.80", "zone=a")
	fb := m.startAgentWith("fb", "127.0.0.81", m.joinToken())
	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "on-a", "--selector", "zone=a")
	module, err := os.ReadFile(filepath.Join(repoRoot, "testdata/ticker.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(module)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	ctx := context.Background()
	fetch := func(dataDir string) ([]byte, error) {
		stream, err := v1.NewAgentClient(nodeConn(t, m.api, dataDir)).FetchBlob(ctx, &v1.FetchBlobRequest{Digest: digest})
		if err != nil {
			return nil, err
		}
		var got []byte
		for {
			c, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return got, nil
			}
			if err != nil {
				return got, err
			}
			got = append(got, c.GetData()...)
		}
	}
	if got, err := fetch(argAfter(m.agents["fa"].args, "--data-dir")); err != nil || len(got) != len(module) {
		t.Errorf("fa fetching the module of its own instance: %d bytes, %v", len(got), err)
	}
	_, err = fetch(argAfter(fb.args, "--data-dir"))
	wantCode(t, "fb fetching a module none of its instances runs", err, codes.PermissionDenied, "only the blobs of its own instances")

	// fb registers claiming zone a, another address and another arch.
	agentAPI := v1.NewAgentClient(nodeConn(t, m.api, argAfter(fb.args, "--data-dir")))
	before := m.nodes()["fb"]
	claim := &v1.Node{Name: "fb", Arch: "riscv64", Os: runtime.GOOS, Labels: map[string]string{"zone": "a"}, Address: "127.0.0.99:7071"}
	_, err = agentAPI.Register(ctx, &v1.RegisterRequest{Node: claim})
	wantCode(t, "fb registering another architecture", err, codes.FailedPrecondition, "cannot change it")
	claim.Arch = before.Arch
	resp, err := agentAPI.Register(ctx, &v1.RegisterRequest{Node: claim})
	if err != nil {
		t.Fatal(err)
	}
	after := m.nodes()["fb"]
	if len(resp.GetLabels()) != 0 || len(after.Labels) != 0 || after.Arch != before.Arch {
		t.Errorf("after fb's registration claiming zone=a: told %v, shown %s", resp.GetLabels(), toJSON(after))
	}
	if after.Address != "127.0.0.99:7071" {
		t.Errorf("fb's address is %s: a node reports where it listens", after.Address)
	}
	if per := m.waitSettled("on-a", 1); per["fa"] != 1 {
		t.Errorf("on-a runs on %v, want fa only", per)
	}
}

// TestServerJoinTokenStaysOutOfTheLog: the join token a server makes at
// its first start is not written to its output when that is not a
// terminal (here a log file): it is in a file only its owner reads.
func TestServerJoinTokenStaysOutOfTheLog(t *testing.T) {
	t.Parallel()
	m := startServer(t)
	path := filepath.Join(m.dataDir, "join-token")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(string(b))
	secret := strings.SplitN(token, ".", 3)[1]
	out, err := os.ReadFile(m.server.log)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), secret) {
		t.Errorf("the server's output holds the join token's secret:\n%s", out)
	}
	if !strings.Contains(string(out), path) {
		t.Errorf("the server's output does not say where the token is:\n%s", out)
	}
	m.startAgentWith("jt", "127.0.0.82", token)
}
