package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// argAfter is the value of flag in a daemon's arguments.
func argAfter(args []string, flag string) string {
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		return ""
	}
	return args[i+1]
}

// withoutFlag drops flag and its value from args.
func withoutFlag(args []string, flag string) []string {
	i := slices.Index(args, flag)
	if i < 0 {
		return args
	}
	return slices.Concat(args[:i], args[i+2:])
}

// nodeConn dials the API at api with the node certificate an agent keeps
// in its data dir, as that agent would.
func nodeConn(t *testing.T, api, dataDir string) *grpc.ClientConn {
	t.Helper()
	nc, err := auth.LoadNodeCredential(filepath.Join(dataDir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	kp, err := auth.NewKeypair(nc.CertPEM, nc.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := auth.PoolOf(nc.CAPEM)
	conn, err := grpc.NewClient(api, grpc.WithTransportCredentials(credentials.NewTLS(auth.MemberClientTLS(pool, kp))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// nodeSerial is the serial number of the certificate an agent keeps.
func nodeSerial(t *testing.T, dataDir string) (string, time.Time) {
	t.Helper()
	b, err := os.ReadFile(auth.NodeCertPath(filepath.Join(dataDir, "pki")))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := auth.ParseCertificate(b)
	if err != nil {
		t.Fatal(err)
	}
	return cert.SerialNumber.String(), cert.NotAfter
}

func wantCode(t *testing.T, what string, err error, code codes.Code, msg string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), msg) {
		t.Errorf("%s: %v, want %s saying %q", what, err, code, msg)
	}
}

// TestJoinTokensAndTheirRefusals: agents join only with a valid token, a
// client without this cluster's credential is refused, and a node's
// certificate lets it act for its own node only, through the real API.
func TestJoinTokensAndTheirRefusals(t *testing.T) {
	m := startServer(t)
	agent := func(token, name string) result {
		return run(t, m.env, "agent", "--server", m.api, "--token", token, "--name", name, "--data-dir", t.TempDir(), "--listen", loopbackAddr(t, "127.0.0.61"))
	}

	// Refused: a wrong secret, a malformed token, a revoked one, an
	// expired one. Each agent exits with one line saying so.
	good := m.joinToken()
	bad := good[:len("wmt_")+9] + strings.Repeat("a", 32) + good[len("wmt_")+9+32:]
	errorLine(t, agent(bad, "bad"), "is not valid")
	errorLine(t, agent("wmt_nope", "bad"), "join token is malformed")
	revoked := joinToken(t, m.env, m.api)
	m.mustRun("token", "revoke", strings.SplitN(strings.TrimPrefix(revoked, "wmt_"), ".", 2)[0])
	errorLine(t, agent(revoked, "bad"), "is not valid")
	expiring := joinToken(t, m.env, m.api, "--ttl", "1s")
	id := strings.SplitN(strings.TrimPrefix(expiring, "wmt_"), ".", 2)[0]
	eventually(t, "the 1s token listed as expired", func() (bool, string) {
		r := m.mustRun("token", "list")
		return hasRow(r.stdout, id, "agent", "-", "-", "0", "expired"), r.stdout
	})
	errorLine(t, agent(expiring, "late"), "expired")
	if r := m.mustRun("get", "nodes", "-o", "json"); strings.Contains(r.stdout, `"bad"`) || strings.Contains(r.stdout, `"late"`) {
		t.Fatalf("a refused agent registered a node: %s", r.stdout)
	}

	// A control-plane member joins only with a server token.
	member := func(extra ...string) result {
		return run(t, m.env, append([]string{"server", "--name", "cp9", "--data-dir", t.TempDir(), "--api", freeAddr(t), "--http", freeAddr(t),
			"--metrics-addr", freeAddr(t), "--peer", freeAddr(t), "--join", m.api}, extra...)...)
	}
	errorLine(t, member(), "needs a server join token")
	errorLine(t, member("--token", good), "is for agents")

	// Two agents join with the good token.
	m.startAgent("n1", "127.0.0.62", "zone=a")
	m.startAgent("n2", "127.0.0.63", "zone=b")
	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "on-n2", "--selector", "zone=b")
	var inst instanceJSON
	for _, in := range m.instances("on-n2") {
		if in.State == "Running" && in.Node == "n2" {
			inst = in
		}
	}
	if inst.ID == "" {
		t.Fatalf("no Running instance on n2: %s", toJSON(m.instances("on-n2")))
	}

	// Clients without this cluster's credential are refused, in one line.
	oneLineError(t, run(t, cliEnv(t), "get", "nodes", "--server", m.api), "no credential for the wasmorch server at "+m.api)
	other, _, err := auth.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := other.Issue(auth.Identity{Role: auth.RoleAdmin, Name: "admin"}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreign := filepath.Join(t.TempDir(), "other.yaml")
	if err := auth.WriteCredential(foreign, auth.Credential{CA: string(other.CertPEM), Cert: string(certPEM), Key: string(keyPEM)}); err != nil {
		t.Fatal(err)
	}
	oneLineError(t, m.run("get", "nodes", "--credentials", foreign), "is not the cluster of the credential "+foreign)
	// The same through the API: plaintext, TLS without a certificate, and
	// a certificate of another cluster's CA.
	ctx := context.Background()
	adm, err := auth.ReadCredential(filepath.Join(m.dataDir, "admin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	pool := auth.PoolOf([]byte(adm.CA))
	plain, err := grpc.NewClient(m.api, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	_, err = v1.NewControlClient(plain).ListNodes(ctx, &v1.ListNodesRequest{})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext ListNodes: %v, want the connection refused", err)
	}
	anon, err := grpc.NewClient(m.api, grpc.WithTransportCredentials(credentials.NewTLS(auth.MemberClientTLS(pool, nil))))
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	_, err = v1.NewControlClient(anon).ListNodes(ctx, &v1.ListNodesRequest{})
	wantCode(t, "ListNodes without a client certificate", err, codes.Unauthenticated, "no client certificate")
	_, err = v1.NewAgentClient(anon).Heartbeat(ctx, &v1.HeartbeatRequest{Node: "n1"})
	wantCode(t, "Heartbeat without a client certificate", err, codes.Unauthenticated, "no client certificate")
	otherKP, err := auth.NewKeypair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	forged, err := grpc.NewClient(m.api, grpc.WithTransportCredentials(credentials.NewTLS(auth.MemberClientTLS(pool, otherKP))))
	if err != nil {
		t.Fatal(err)
	}
	defer forged.Close()
	_, err = v1.NewControlClient(forged).ListNodes(ctx, &v1.ListNodesRequest{})
	wantCode(t, "ListNodes with another cluster's certificate", err, codes.Unauthenticated, "not issued by this cluster's CA")

	// n1's own certificate: it may heartbeat as n1, and nothing else.
	n1 := nodeConn(t, m.api, argAfter(m.agents["n1"].args, "--data-dir"))
	agentAPI, controlAPI := v1.NewAgentClient(n1), v1.NewControlClient(n1)
	if _, err := agentAPI.Heartbeat(ctx, &v1.HeartbeatRequest{Node: "n1"}); err != nil {
		t.Fatalf("n1 heartbeating as itself: %v", err)
	}
	_, err = agentAPI.Heartbeat(ctx, &v1.HeartbeatRequest{Node: "n2"})
	wantCode(t, "n1 heartbeating as n2", err, codes.PermissionDenied, "does not allow acting for node")
	failed := &v1.InstanceStatus{Id: inst.ID, State: v1.InstanceState_INSTANCE_STATE_FAILED, Exited: true, ExitCode: 9, Reason: "Forged"}
	_, err = agentAPI.ReportStatus(ctx, &v1.StatusBatch{Node: "n1", Statuses: []*v1.InstanceStatus{failed}})
	wantCode(t, "n1 reporting on n2's instance", err, codes.PermissionDenied, "not bound to it")
	_, err = agentAPI.ReportStatus(ctx, &v1.StatusBatch{Node: "n2", Statuses: []*v1.InstanceStatus{failed}})
	wantCode(t, "n1 reporting as n2", err, codes.PermissionDenied, "does not allow acting for node")
	sess, err := agentAPI.Session(ctx, &v1.SessionRequest{Node: "n2"})
	if err == nil {
		_, err = sess.Recv()
	}
	wantCode(t, "n1 reading n2's desired set", err, codes.PermissionDenied, "does not allow acting for node")
	_, err = agentAPI.RemovedVolumes(ctx, &v1.RemovedVolumesRequest{Node: "n2", ForgetUids: []string{"x"}}) // state
	wantCode(t, "n1 forgetting n2's removed volumes", err, codes.PermissionDenied, "does not allow acting for node")
	_, err = controlAPI.ListNodes(ctx, &v1.ListNodesRequest{})
	wantCode(t, "n1 calling the Control API", err, codes.PermissionDenied, "may not call")
	for _, in := range m.instances("on-n2") {
		if in.ID == inst.ID && (in.State != "Running" || in.ExitCode != nil) {
			t.Fatalf("a refused report changed %s: %s", inst.ID, toJSON(in))
		}
	}

	// An agent restarted without a token reuses its certificate.
	d := m.agents["n1"]
	serial, _ := nodeSerial(t, argAfter(d.args, "--data-dir"))
	d.stop(syscall.SIGTERM)
	d.args = withoutFlag(d.args, "--token")
	d.start()
	m.waitNode("n1", "Ready")
	if again, _ := nodeSerial(t, argAfter(d.args, "--data-dir")); again != serial {
		t.Errorf("the restarted agent has a new certificate (%s, was %s): it should reuse its own", again, serial)
	}
	// The control plane reads logs from the workers over mutual TLS.
	if r := m.mustRun("logs", "on-n2"); !strings.Contains(r.stdout, "tick") {
		t.Errorf("logs of on-n2 through the control plane: %s", r)
	}
}

// TestCertificatesRotateBeforeExpiry: with a short certificate lifetime
// (a hidden flag), the agent renews its certificate over its session
// before it expires, the admin credential is renewed too, and once the
// first certificate has expired everything still connects: the agent,
// restarted, with its renewed certificate; the CLI; logs from the worker.
func TestCertificatesRotateBeforeExpiry(t *testing.T) {
	api, http := freeAddr(t), freeAddr(t)
	env := cliEnv(t)
	m := &multi{cluster: &cluster{t: t, api: api, http: http, metrics: freeAddr(t), env: env, dataDir: t.TempDir()}, agents: map[string]*daemon{}}
	m.server = startDaemon(t, "server", env, "server", "--data-dir", m.dataDir, "--api", api, "--http", http, "--metrics-addr", m.metrics, "--name", "cp", "--cert-lifetime", "15s")
	m.token = joinTokenWhenUp(t, env, api)
	d := m.startAgent("r1", "127.0.0.64", "")
	dataDir := argAfter(d.args, "--data-dir")
	first, firstExpiry := nodeSerial(t, dataDir)
	if life := time.Until(firstExpiry); life > time.Minute {
		t.Fatalf("the node certificate is valid for %s: --cert-lifetime was not applied", life)
	}
	m.mustRun("deploy", "testdata/ticker.wasm", "--name", "rot")

	eventually(t, "the agent's certificate renewed", func() (bool, string) {
		s, _ := nodeSerial(t, dataDir)
		return s != first, "still serial " + s
	})
	eventually(t, "the first certificate expired", func() (bool, string) {
		return time.Now().After(firstExpiry.Add(time.Second)), "expires " + firstExpiry.String()
	})
	// New connections everywhere, with the first certificate expired.
	d.stop(syscall.SIGTERM)
	d.args = withoutFlag(d.args, "--token")
	d.start()
	m.waitNode("r1", "Ready")
	eventually(t, "rot Running again on the restarted agent", func() (bool, string) {
		is := m.instances("rot")
		return len(is) == 1 && is[0].State == "Running", toJSON(is)
	})
	if r := m.mustRun("logs", "rot"); !strings.Contains(r.stdout, "tick") {
		t.Errorf("logs after rotation: %s", r)
	}
	out, err := os.ReadFile(d.log)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "renewed this node's certificate") {
		t.Errorf("the agent's log does not say it renewed its certificate:\n%s", out)
	}
	adm, err := auth.ReadCredential(filepath.Join(m.dataDir, "admin.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := auth.ParseCertificate([]byte(adm.Cert))
	if err != nil || !cert.NotAfter.After(firstExpiry) {
		t.Errorf("the admin credential was not renewed: %v %v", cert.NotAfter, err)
	}
}
