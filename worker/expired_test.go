package worker

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/internal/fakert"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// giveExpiredNodeCredential writes a node certificate for node into
// dataDir/pki that expired an hour ago.
func giveExpiredNodeCredential(t testing.TB, dataDir, node string) {
	t.Helper()
	ca := testCA()
	csr, keyPEM, err := auth.NewRequest(node)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignRequestFor(csr, auth.Identity{Role: auth.RoleNode, Name: node}, time.Now().Add(-2*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.SaveNodeCredential(Config{DataDir: dataDir}.PKIDir(), auth.NodeCredential{CAPEM: ca.CertPEM, CertPEM: certPEM, KeyPEM: keyPEM}); err != nil {
		t.Fatal(err)
	}
}

// Join issues the node's certificate from the test CA, as a member does
// for a valid token.
func (f *fakeCP) Join(_ context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	cert, err := testCA().SignRequest(req.GetCsr(), auth.Identity{Role: auth.RoleNode, Name: req.GetNode()}, time.Now())
	if err != nil {
		return nil, err
	}
	return &pb.JoinResponse{Certificate: cert, CaCertificate: testCA().CertPEM}, nil
}

// runAndKeep runs instance a on a worker in dir until the state file has
// it, then stops the worker and its control plane.
func runAndKeep(t *testing.T, dir string) {
	t.Helper()
	first := startEnv(t, envOptions{config: func(c *Config) { c.DataDir = dir }, worker: func(w *Worker) { w.persist.interval = 0 }})
	first.cp.setDesired(rec("a", 0))
	first.waitRunning("a")
	eventually(t, "a on disk", func() bool {
		st, err := savedOn(t, dir)
		return err == nil && len(st.set.GetInstances()) == 1
	})
	first.stopCP()
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}
}

// An edge agent whose certificate expired while it was cut off (certificates
// live a day, renewed over the session) and that restarts still runs the
// set it kept on disk, and says what it needs to reconnect; one with nothing
// on disk still cannot start without a join token.
func TestExpiredCertificateRunsTheSetKeptOnDisk(t *testing.T) {
	dir := t.TempDir()
	runAndKeep(t, dir)

	logs := &logBuffer{}
	second := startEnv(t, envOptions{expiredCredential: true, config: func(c *Config) {
		c.DataDir = dir
		c.Servers = []string{"127.0.0.1:1"} // out of reach
		c.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}})
	second.waitRunning("a")
	if !second.w.certExpired() {
		t.Fatal("the worker does not know its certificate expired")
	}
	if !strings.Contains(logs.String(), "its certificate expired at") || !strings.Contains(logs.String(), "token create --node node-a") {
		t.Fatalf("the worker did not say its certificate expired and how to reconnect:\n%s", logs)
	}

	cfg := Config{NodeName: "n", DataDir: t.TempDir(), Servers: []string{"127.0.0.1:1"}, ListenAddr: "127.0.0.1:0",
		MemoryBytes: 1 << 30, Runtimes: []runtimeapi.Runtime{fakert.New("wasm")}}
	giveExpiredNodeCredential(t, cfg.DataDir, "n")
	if _, err := New(context.Background(), cfg); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("New with an expired certificate, no set on disk and no token = %v, want a refusal that says it expired", err)
	}
}

// Given a join token, such an agent joins again in the background while its
// instances run: the new certificate replaces the expired one on disk and in
// place, and nothing restarts.
func TestExpiredCertificateJoinsAgainWithAToken(t *testing.T) {
	dir := t.TempDir()
	runAndKeep(t, dir)
	tok, err := testCA().NewToken()
	if err != nil {
		t.Fatal(err)
	}
	second := startEnv(t, envOptions{expiredCredential: true,
		cp: func(f *fakeCP) { f.setDesired(rec("a", 0)) },
		config: func(c *Config) {
			c.DataDir = dir
			c.JoinToken = tok.String()
		}})
	second.waitRunning("a")
	eventually(t, "joined again", func() bool { return !second.w.certExpired() })
	nc, err := auth.LoadNodeCredential(second.w.pkiDir())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := auth.ParseCertificate(nc.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.NotAfter.After(time.Now()) || !second.w.id.kp.Leaf().NotAfter.Equal(leaf.NotAfter) {
		t.Fatalf("after the join: certificate on disk expires %s, in use %s; want the new one in both", leaf.NotAfter, second.w.id.kp.Leaf().NotAfter)
	}
	if n := second.rt.Starts("a"); n != 1 {
		t.Fatalf("a started %d times, want once", n)
	}
}
