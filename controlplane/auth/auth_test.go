package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

func TestCAIsCreatedOnceAndReloaded(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca, created, err := LoadOrCreateCA(dir)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreateCA: created=%v err=%v", created, err)
	}
	st, err := os.Stat(filepath.Join(dir, caKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("CA key mode = %v (%v), want 0600", st.Mode().Perm(), err)
	}
	again, created, err := LoadOrCreateCA(dir)
	if err != nil || created || again.Cert.SerialNumber.Cmp(ca.Cert.SerialNumber) != 0 {
		t.Fatalf("second LoadOrCreateCA: created=%v err=%v, want the same CA loaded", created, err)
	}
	if err := os.Remove(filepath.Join(dir, caCertFile)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateCA(dir); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("with the certificate missing: %v, want a refusal to create a new CA over the old key", err)
	}
}

func pool(ca *CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

func TestIssuedCertificatesVerifyAndNameTheirHolder(t *testing.T) {
	ca, _, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	certPEM, _, err := ca.Issue(Identity{Role: RoleMember, Name: "cp1"}, []string{"127.0.0.1", "cp1.example"}, now)
	if err != nil {
		t.Fatal(err)
	}
	member, err := ParseCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := member.Verify(x509.VerifyOptions{Roots: pool(ca), DNSName: "127.0.0.1", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("member certificate does not verify for 127.0.0.1: %v", err)
	}
	if _, err := member.Verify(x509.VerifyOptions{Roots: pool(other), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("member certificate verifies against another cluster's CA")
	}
	if id, err := IdentityOf(member); err != nil || id != (Identity{RoleMember, "cp1"}) {
		t.Errorf("IdentityOf(member) = %v, %v", id, err)
	}

	// A node sends a request naming someone else: the CA decides the name.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "admin", OrganizationalUnit: []string{"admin"}}}, key)
	if err != nil {
		t.Fatal(err)
	}
	nodePEM, err := ca.SignRequest(csr, Identity{Role: RoleNode, Name: "edge-1"}, now)
	if err != nil {
		t.Fatal(err)
	}
	node, err := ParseCertificate(nodePEM)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := IdentityOf(node); err != nil || id != (Identity{RoleNode, "edge-1"}) {
		t.Errorf("IdentityOf(node) = %v, %v; want node:edge-1 whatever the request said", id, err)
	}
	if _, err := ca.SignRequest([]byte("junk"), Identity{Role: RoleNode, Name: "x"}, now); !errdefs.IsInvalidArgument(err) {
		t.Errorf("junk request: %v, want InvalidArgument", err)
	}
	if _, _, err := ca.Issue(Identity{Role: "root", Name: "x"}, nil, now); !errdefs.IsInvalidArgument(err) {
		t.Errorf("unknown role: %v, want InvalidArgument", err)
	}

	if NeedsRenewal(node, now) || !NeedsRenewal(node, now.Add(CertLifetime*3/4)) {
		t.Error("NeedsRenewal should be false when fresh and true with a quarter of the lifetime left")
	}
}

// TestMutualTLSRefusesClientsWithoutAClusterCertificate runs a real TLS
// handshake with a member certificate that requires client certificates
// from the cluster CA.
func TestMutualTLSRefusesClientsWithoutAClusterCertificate(t *testing.T) {
	ca, _, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	pair := func(c *CA, id Identity, hosts ...string) tls.Certificate {
		certPEM, keyPEM, err := c.Issue(id, hosts, now)
		if err != nil {
			t.Fatal(err)
		}
		kp, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{pair(ca, Identity{RoleMember, "cp1"}, "127.0.0.1")},
		ClientCAs:    pool(ca),
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	seen := make(chan string, 3)
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			tc := conn.(*tls.Conn)
			if err := tc.Handshake(); err != nil {
				seen <- "refused"
			} else if id, err := IdentityOf(tc.ConnectionState().PeerCertificates[0]); err == nil {
				seen <- id.String()
			}
			_ = conn.Close()
		}
	}()
	dial := func(certs []tls.Certificate) string {
		conn, err := tls.Dial("tcp", lis.Addr().String(), &tls.Config{RootCAs: pool(ca), Certificates: certs, MinVersion: tls.VersionTLS13})
		if err == nil {
			// TLS 1.3 reports a refused client certificate on first read.
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, _ = conn.Read(make([]byte, 1))
			_ = conn.Close()
		} else if !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "certificate") {
			t.Logf("dial: %v", err)
		}
		select {
		case s := <-seen:
			return s
		case <-time.After(10 * time.Second):
			return "no answer"
		}
	}
	if got := dial([]tls.Certificate{pair(ca, Identity{RoleAdmin, "admin"})}); got != "admin:admin" {
		t.Errorf("client with an admin certificate: server saw %q, want admin:admin", got)
	}
	if got := dial(nil); got != "refused" {
		t.Errorf("client without a certificate: server saw %q, want refused", got)
	}
	if got := dial([]tls.Certificate{pair(other, Identity{RoleAdmin, "admin"})}); got != "refused" {
		t.Errorf("client with another cluster's certificate: server saw %q, want refused", got)
	}
}

func TestJoinTokens(t *testing.T) {
	ca, _, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ca.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseToken(tok.String())
	if err != nil || parsed != tok {
		t.Fatalf("ParseToken(%s) = %v, %v", tok, parsed, err)
	}
	for _, bad := range []string{"", "wmt_", "abc.def", "wmt_" + tok.ID, "wmt_" + tok.ID + "." + tok.Secret[:10], "wmt_" + tok.ID + "." + tok.Secret, "xyz_" + tok.ID + "." + tok.Secret + "." + tok.CAPin, "wmt_" + tok.ID + "." + strings.Repeat("!", 32) + "." + tok.CAPin} {
		if _, err := ParseToken(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseToken(%q) = %v, want InvalidArgument", bad, err)
		}
	}
	now := time.Now()
	hash := SecretHash(tok.Secret)
	if err := CheckToken(tok, hash, now.Add(time.Hour), now); err != nil {
		t.Errorf("valid token refused: %v", err)
	}
	if err := CheckToken(Token{ID: tok.ID, Secret: strings.Repeat("a", 32), CAPin: tok.CAPin}, hash, now.Add(time.Hour), now); !errdefs.IsInvalidArgument(err) {
		t.Errorf("wrong secret: %v, want InvalidArgument", err)
	}
	if err := CheckToken(tok, hash, now.Add(-time.Second), now); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v, want FailedPrecondition saying it expired", err)
	}
}
