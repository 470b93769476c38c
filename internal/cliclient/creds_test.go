package cliclient

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// testPKI is a cluster CA for the client tests: the fake server serves
// with a member certificate, the client presents an admin credential.
type testPKI struct {
	ca  *auth.CA
	dir string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	ca, _, err := auth.LoadOrCreateCA(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	return &testPKI{ca: ca, dir: dir}
}

func (p *testPKI) serverCreds(t *testing.T) credentials.TransportCredentials {
	t.Helper()
	certPEM, keyPEM, err := p.ca.Issue(auth.Identity{Role: auth.RoleMember, Name: "cp"}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kp, err := auth.NewKeypair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return credentials.NewTLS(auth.MemberServerTLS(kp))
}

func (p *testPKI) adminCredential(t *testing.T) *Credential {
	t.Helper()
	certPEM, keyPEM, err := p.ca.Issue(auth.Identity{Role: auth.RoleAdmin, Name: "admin"}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(p.dir, "admin.yaml")
	if err := auth.WriteCredential(path, auth.Credential{CA: string(p.ca.CertPEM), Cert: string(certPEM), Key: string(keyPEM)}); err != nil {
		t.Fatal(err)
	}
	c, err := LoadCredential(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// refusing answers every call as a server that does not accept the
// client's certificate.
type refusing struct {
	wasmorchv1.UnimplementedControlServer
}

func (refusing) ListWorkloads(context.Context, *wasmorchv1.ListWorkloadsRequest) (*wasmorchv1.ListWorkloadsResponse, error) {
	return nil, status.Error(codes.Unauthenticated, "the client certificate of \"admin\" was not issued by this cluster's CA")
}

func TestCredentialProblemsAreExplainedInOneLine(t *testing.T) {
	pki := newTestPKI(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(pki.serverCreds(t)))
	wasmorchv1.RegisterControlServer(srv, refusing{})
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	addr := lis.Addr().String()

	for _, tc := range []struct {
		name string
		opt  DialOption
		want string
	}{
		{"no credential", WithCredential(nil, []string{"/home/u/.config/wasmorch/credentials/x.yaml"}), "no credential for the wasmorch server at " + addr + " (none in /home/u/.config/wasmorch/credentials/x.yaml); "},
		{"another cluster's credential", WithCredential(newTestPKI(t).adminCredential(t), nil), "the wasmorch server at " + addr + " is not the cluster of the credential "},
		{"a credential the server refuses", WithCredential(pki.adminCredential(t), nil), "the wasmorch server at " + addr + " refused the credential "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Dial(addr, "get", tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.ListWorkloads(context.Background())
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "; ") {
				t.Fatalf("ListWorkloads = %v, want one line starting %q with what to do", err, tc.want)
			}
			if !errdefs.IsUnauthenticated(err) {
				t.Errorf("%v is not in the Unauthenticated category", err)
			}
		})
	}
}

// TestAnHTTPPortIsNotTakenForTheAPI: --server at the gateway's (plain
// HTTP) port says so, with or without a credential for that address.
func TestAnHTTPPortIsNotTakenForTheAPI(t *testing.T) {
	web := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(web.Close)
	addr := strings.TrimPrefix(web.URL, "http://")
	for name, opt := range map[string]DialOption{
		"no credential": WithCredential(nil, nil),
		"a credential":  WithCredential(newTestPKI(t).adminCredential(t), nil),
	} {
		t.Run(name, func(t *testing.T) {
			c, err := Dial(addr, "get", opt)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.ListWorkloads(context.Background())
			want := addr + " answers plain HTTP (a gateway or metrics port?): it is not a wasmorch API address; point --server at the API address"
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("ListWorkloads = %v, want %q", err, want)
			}
		})
	}
}

func TestFindCredentialLooksUpTheServerAddress(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	want := pki.adminCredential(t)
	c, err := auth.ReadCredential(want.Path)
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.WriteCredential(filepath.Join(dir, auth.CredentialFileName("127.0.0.2:7070")), c); err != nil {
		t.Fatal(err)
	}
	got, _, err := FindCredential(CredentialSearch{Dir: dir}, "127.0.0.1:7070,127.0.0.2:7070")
	if err != nil || got == nil || got.Path != filepath.Join(dir, "127.0.0.2_7070.yaml") {
		t.Fatalf("FindCredential = %+v, %v; want the file for the second member", got, err)
	}
	got, tried, err := FindCredential(CredentialSearch{Dir: dir}, "127.0.0.3:7070")
	if err != nil || got != nil || len(tried) != 1 {
		t.Fatalf("FindCredential for an unknown server = %+v, %v, %v; want none and the place looked", got, tried, err)
	}
	// The same server by another name: localhost for the 127.0.0.1 it was
	// started on, and the reverse.
	if err := auth.WriteCredential(filepath.Join(dir, auth.CredentialFileName("127.0.0.1:7071")), c); err != nil {
		t.Fatal(err)
	}
	if err := auth.WriteCredential(filepath.Join(dir, auth.CredentialFileName("localhost:7072")), c); err != nil {
		t.Fatal(err)
	}
	for server, file := range map[string]string{"localhost:7071": "127.0.0.1_7071.yaml", "127.0.0.1:7072": "localhost_7072.yaml"} {
		got, _, err = FindCredential(CredentialSearch{Dir: dir}, server)
		if err != nil || got == nil || got.Path != filepath.Join(dir, file) {
			t.Errorf("FindCredential(%s) = %+v, %v; want %s", server, got, err, file)
		}
	}
	// A config file that is a credential (admin.yaml as --config) wins
	// over the directory.
	got, _, err = FindCredential(CredentialSearch{Dir: dir, ConfigFile: want.Path}, "127.0.0.2:7070")
	if err != nil || got == nil || got.Path != want.Path {
		t.Fatalf("FindCredential with a credential as config file = %+v, %v", got, err)
	}
	if _, _, err := FindCredential(CredentialSearch{Explicit: filepath.Join(dir, "missing.yaml")}, "127.0.0.2:7070"); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("an explicit credential that does not exist: %v", err)
	}
}
