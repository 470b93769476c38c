package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// credentialSerial is the serial of the certificate in a credential file.
func credentialSerial(t *testing.T, path string) string {
	t.Helper()
	c, err := auth.ReadCredential(path)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := auth.ParseCertificate([]byte(c.Cert))
	if err != nil {
		t.Fatal(err)
	}
	return auth.Serial(cert)
}

// TestAdminCredentialsAreIssuedAndRevoked: an admin issues a credential
// of its own, lists it, and revokes it: every call with it is refused
// from then on and its open watch ends; a member whose own admin.yaml is
// revoked writes a new one.
func TestAdminCredentialsAreIssuedAndRevoked(t *testing.T) {
	t.Parallel()
	m := startServer(t)
	alice := filepath.Join(t.TempDir(), "alice.yaml")
	r := m.mustRun("credentials", "create", "--name", "alice", "--out", alice, "--ttl", "1h")
	if !strings.Contains(r.stdout, "wrote admin credential alice") {
		t.Errorf("credentials create printed %q", r.stdout)
	}
	if fi, err := os.Stat(alice); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("alice.yaml: %v %v, want mode 0600", fi, err)
	}
	m.mustRun("get", "nodes", "--credentials", alice)
	serial := credentialSerial(t, alice)
	own := credentialSerial(t, filepath.Join(m.dataDir, "admin.yaml"))
	list := m.mustRun("credentials", "list").stdout
	if !hasCells(list, serial, "alice") || !hasCells(list, own, "admin") {
		t.Errorf("credentials list lacks alice's (%s) or the member's own (%s):\n%s", serial, own, list)
	}

	// A watch open with alice's credential, then her credential revoked.
	c, err := auth.ReadCredential(alice)
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := c.ClientTLS()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(m.api, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	watch, err := v1.NewControlClient(conn).Watch(ctx, &v1.WatchRequest{Kind: v1.WatchKind_WATCH_KIND_NODES})
	if err != nil {
		t.Fatal(err)
	}
	r = m.mustRun("credentials", "revoke", "--file", alice, "--reason", "laptop lost")
	if !strings.Contains(r.stdout, "revoked credential "+serial+" (alice)") {
		t.Errorf("credentials revoke printed %q", r.stdout)
	}
	for err == nil {
		_, err = watch.Recv()
	}
	wantCode(t, "alice's watch after the revocation", err, codes.Unauthenticated, "laptop lost")
	oneLineError(t, m.run("get", "nodes", "--credentials", alice), "was revoked")
	if list := m.mustRun("credentials", "list").stdout; !strings.Contains(list, serial) || hasCells(list, serial, "alice", "-") {
		t.Errorf("credentials list does not show alice's credential revoked:\n%s", list)
	}
	errorLine(t, m.run("credentials", "revoke", "12x"), "is not a certificate serial number")

	// The member's own admin.yaml, revoked: it writes a new one, which
	// the CLI of this user finds as before.
	m.mustRun("credentials", "revoke", own)
	eventually(t, "a new admin.yaml", func() (bool, string) {
		now := credentialSerial(t, filepath.Join(m.dataDir, "admin.yaml"))
		return now != own, now
	})
	eventually(t, "the CLI working with the new admin credential", func() (bool, string) {
		r := m.run("get", "nodes")
		return r.code == 0, r.String()
	})
}

// joiningMember is a member of `members -o json`, with its ID.
type joiningMember struct {
	Name  string `json:"name"`
	ID    string `json:"id"`
	State string `json:"state"`
	Error string `json:"error"`
}

// TestAbortedMemberJoinIsListedAndCleanedUp: a member join cut short after
// etcd added it leaves an unstarted member: `members` lists it by ID and
// the name it joined as, `member remove ID` removes it, and the same
// joiner retrying (on another peer port) replaces its own first attempt.
func TestAbortedMemberJoinIsListedAndCleanedUp(t *testing.T) {
	t.Parallel()
	h := &haCluster{t: t, env: cliEnv(t)}
	cp1 := &member{name: "cp1", api: loopbackAddr(t, "127.0.0.41"), http: loopbackAddr(t, "127.0.0.41"), peer: loopbackAddr(t, "127.0.0.41"), dataDir: t.TempDir()}
	cp1.proc = startDaemon(t, "cp1", h.env, "server", "--name", "cp1", "--data-dir", cp1.dataDir, "--api", cp1.api, "--http", cp1.http, "--peer", cp1.peer, "--metrics-addr", "127.0.0.1:0", "--init")
	h.members = []*member{cp1}
	h.waitHealthy(1)
	token := joinToken(t, h.env, cp1.api, "--role", "server")

	// A joiner's first step, as 'server --join' takes it, and then it dies.
	abort := func(name, peer string) {
		tok, err := auth.ParseToken(token)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(cp1.api, grpc.WithTransportCredentials(credentials.NewTLS(auth.PinnedClientTLS(tok.CAPin))))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+token)
		if _, err := v1.NewControlClient(conn).AddMember(ctx, &v1.AddMemberRequest{Name: name, PeerUrl: "https://" + peer}); err != nil {
			t.Fatal(err)
		}
	}
	unstarted := func(as string) joiningMember {
		t.Helper()
		var ms []joiningMember
		r := run(t, h.env, "members", "-o", "json", "--server", cp1.api)
		if err := json.Unmarshal([]byte(r.stdout), &ms); err != nil {
			t.Fatalf("%v\n%s", err, r)
		}
		for _, m := range ms {
			if m.Name == "" && strings.Contains(m.Error, "joining as "+as) {
				return m
			}
		}
		return joiningMember{}
	}

	abort("cp3", loopbackAddr(t, "127.0.0.43"))
	gone := unstarted("cp3")
	if gone.ID == "" || !strings.Contains(gone.Error, "wasmorch member remove "+gone.ID) {
		t.Fatalf("members does not list the unstarted cp3 by its ID: %s", toJSON(gone))
	}
	if table := run(t, h.env, "members", "--server", cp1.api).stdout; !strings.Contains(table, gone.ID) {
		t.Errorf("members' table does not show the ID %s:\n%s", gone.ID, table)
	}
	r := run(t, h.env, "member", "remove", gone.ID, "--server", cp1.api)
	if r.code != 0 || !strings.Contains(r.stdout, "member "+gone.ID+" removed") {
		t.Fatalf("%s", r)
	}
	if m := unstarted("cp3"); m.ID != "" {
		t.Errorf("cp3's unstarted member is still listed after 'member remove %s': %s", gone.ID, toJSON(m))
	}

	// cp2's first attempt dies; it retries on another peer port and joins.
	abort("cp2", loopbackAddr(t, "127.0.0.42"))
	first := unstarted("cp2")
	if first.ID == "" {
		t.Fatal("no unstarted member for cp2's first attempt")
	}
	cp2 := &member{name: "cp2", api: loopbackAddr(t, "127.0.0.42"), http: loopbackAddr(t, "127.0.0.42"), peer: loopbackAddr(t, "127.0.0.42"), dataDir: t.TempDir()}
	cp2.proc = startDaemon(t, "cp2", h.env, "server", "--name", "cp2", "--data-dir", cp2.dataDir, "--api", cp2.api, "--http", cp2.http, "--peer", cp2.peer, "--metrics-addr", "127.0.0.1:0",
		"--join", cp1.api, "--token", token)
	h.members = append(h.members, cp2)
	h.waitHealthy(2)
	if m := unstarted("cp2"); m.ID != "" {
		t.Errorf("cp2's first attempt is still listed: %s", toJSON(m))
	}
	ms, _ := h.membersSeenBy(cp1.api)
	if len(ms) != 2 {
		t.Errorf("members: %s, want cp1 and cp2 only", toJSON(ms))
	}
}

// TestCARotationBySnapshot walks the CA rotation docs/cluster.md gives: a
// snapshot restored into a new data dir, with the old secrets key, starts
// under a new CA; every old credential is refused, and an agent joins it
// again (with a token for its name) and runs its workload with its secret.
func TestCARotationBySnapshot(t *testing.T) {
	t.Parallel()
	m := startServer(t)
	d := m.startAgent("ro1", "127.0.0.83", "zone=a")
	m.mustRun("secret", "set", "ro-secret", "GREETING=rotated")
	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "ro", "--selector", "zone=a", "--from-secret", "ro-secret")
	snap := filepath.Join(t.TempDir(), "state.db")
	m.mustRun("snapshot", "save", snap)
	oldAdmin := filepath.Join(t.TempDir(), "old-admin.yaml")
	b, err := os.ReadFile(filepath.Join(m.dataDir, "admin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(oldAdmin, b, 0o600); err != nil {
		t.Fatal(err)
	}
	d.stop(syscall.SIGTERM)
	m.server.stop(syscall.SIGTERM)

	newDir := filepath.Join(t.TempDir(), "new")
	if r := run(t, m.env, "snapshot", "restore", snap, "--data-dir", newDir, "--name", "cp"); r.code != 0 {
		t.Fatalf("%s", r)
	}
	key, err := os.ReadFile(filepath.Join(m.dataDir, "pki", "secrets.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(newDir, "pki"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(newDir, "pki", "secrets.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	n := startServerAt(t, newDir, m.env)
	if r := n.run("get", "nodes", "--credentials", oldAdmin); r.code == 0 {
		t.Errorf("the old admin credential still works: %s", r)
	}
	oldCA, _ := os.ReadFile(filepath.Join(m.dataDir, "pki", "ca.crt"))
	newCA, _ := os.ReadFile(filepath.Join(newDir, "pki", "ca.crt"))
	if string(oldCA) == string(newCA) {
		t.Fatal("the restored member kept the old CA")
	}
	// The agent, its old credential moved aside, joins the new CA.
	agentDir := argAfter(d.args, "--data-dir")
	if err := os.Rename(filepath.Join(agentDir, "pki"), filepath.Join(agentDir, "pki.old")); err != nil {
		t.Fatal(err)
	}
	d.args = append(withoutFlag(withoutFlag(d.args, "--token"), "--server"), "--server", n.api, "--token", joinToken(t, n.env, n.api, "--node", "ro1", "--uses", "1"))
	d.start()
	n.agents["ro1"] = d
	n.waitNode("ro1", "Ready")
	// The secret, sealed before the rotation, still opens and reaches a
	// new instance on the rejoined node.
	n.mustRun("deploy", "testdata/hello.wasm", "--name", "ro2", "--selector", "zone=a", "--from-secret", "ro-secret", "--restart", "never")
	logsContain(t, n.cluster, "ro2", "GREETING=rotated")
	if !d.running() {
		t.Error("the agent stopped after joining the new CA")
	}
}

// startServerAt starts `wasmorch server` on dataDir (a restored one) and
// waits until its API answers.
func startServerAt(t *testing.T, dataDir string, env []string) *multi {
	t.Helper()
	api, http := freeAddr(t), freeAddr(t)
	n := &multi{cluster: &cluster{t: t, api: api, http: http, env: env, dataDir: dataDir}, agents: map[string]*daemon{}}
	n.server = startDaemon(t, "server-new", env, "server", "--data-dir", dataDir, "--api", api, "--http", http, "--metrics-addr", "127.0.0.1:0", "--name", "cp")
	eventually(t, "the restored server answering", func() (bool, string) {
		if !n.server.running() {
			out, _ := os.ReadFile(n.server.log)
			t.Fatalf("the restored server exited:\n%s", out)
		}
		r := n.run("get", "nodes")
		return r.code == 0, fmt.Sprint(r)
	})
	return n
}
