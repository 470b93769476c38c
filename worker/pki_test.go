package worker

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/worker/internal/fakert"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// testCA is the cluster CA of the worker tests: the fake control plane
// serves with a member certificate from it, and each worker gets a node
// certificate from it, as `wasmorch up` gives its own worker one.
var testCA = sync.OnceValue(func() *auth.CA {
	dir, err := os.MkdirTemp("", "wasmorch-worker-pki-")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	ca, _, err := auth.LoadOrCreateCA(dir)
	if err != nil {
		panic(err)
	}
	return ca
})

// giveNodeCredential writes a node certificate for node into dataDir/pki.
func giveNodeCredential(t testing.TB, dataDir, node string) {
	t.Helper()
	ca := testCA()
	csr, keyPEM, err := auth.NewRequest(node)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignRequest(csr, auth.Identity{Role: auth.RoleNode, Name: node}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.SaveNodeCredential(Config{DataDir: dataDir}.PKIDir(), auth.NodeCredential{CAPEM: ca.CertPEM, CertPEM: certPEM, KeyPEM: keyPEM}); err != nil {
		t.Fatal(err)
	}
}

// memberKeypair is a control-plane member's certificate (with the CA
// after it, as members serve it).
func memberKeypair(t testing.TB) *auth.Keypair {
	t.Helper()
	ca := testCA()
	certPEM, keyPEM, err := ca.Issue(auth.Identity{Role: auth.RoleMember, Name: "cp"}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kp, err := auth.NewKeypair(append(certPEM, ca.CertPEM...), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// memberServerCreds serve the fake control plane; memberToNode dials a
// worker's own service as a member would.
func memberServerCreds(t testing.TB) credentials.TransportCredentials {
	return credentials.NewTLS(auth.MemberServerTLS(memberKeypair(t)))
}

func memberToNode(t testing.TB, node string) credentials.TransportCredentials {
	return credentials.NewTLS(auth.NodeClientTLS(testCA().Pool(), memberKeypair(t), node))
}

func TestANodeWithoutCertificateOrTokenCannotStart(t *testing.T) {
	cfg := Config{NodeName: "n", DataDir: t.TempDir(), Servers: []string{"127.0.0.1:1"}, ListenAddr: "127.0.0.1:0",
		MemoryBytes: 1 << 30, Runtimes: []runtimeapi.Runtime{fakert.New("wasm")}}
	if _, err := New(context.Background(), cfg); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "--token") {
		t.Fatalf("New without a certificate or token = %v, want a refusal that asks for --token", err)
	}
	// Another node's certificate does not make this one.
	giveNodeCredential(t, cfg.DataDir, "someone-else")
	if _, err := New(context.Background(), cfg); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "not node n's") {
		t.Fatalf("New with another node's certificate = %v, want a refusal", err)
	}
	// With a token it starts, to join in Start.
	cfg.JoinToken = "wmt_x"
	w, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	_ = w.Close()
}

func TestATokenOfAnotherClusterMakesTheNodeJoinAgain(t *testing.T) {
	cfg := Config{NodeName: "n", DataDir: t.TempDir(), Servers: []string{"127.0.0.1:1"}, ListenAddr: "127.0.0.1:0",
		MemoryBytes: 1 << 30, Runtimes: []runtimeapi.Runtime{fakert.New("wasm")}}
	giveNodeCredential(t, cfg.DataDir, "n")
	other, _, err := auth.LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		ca       *auth.CA
		wantJoin bool
	}{"this cluster's token": {testCA(), false}, "another cluster's token": {other, true}} {
		tok, err := tc.ca.NewToken()
		if err != nil {
			t.Fatal(err)
		}
		cfg.JoinToken = tok.String()
		w, err := New(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if joins := w.id == nil; joins != tc.wantJoin {
			t.Errorf("%s: joins again = %v, want %v", name, joins, tc.wantJoin)
		}
		_ = w.Close()
	}
}
