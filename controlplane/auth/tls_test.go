package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newTestCA(t *testing.T) *CA {
	t.Helper()
	ca, _, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func keypair(t *testing.T, ca *CA, id Identity, chain bool) *Keypair {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(id, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if chain {
		certPEM = append(certPEM, ca.CertPEM...)
	}
	kp, err := NewKeypair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// handshake runs a real TLS handshake between server and client configs
// over loopback and returns the client's error, else the server's.
func handshake(t *testing.T, server, client *tls.Config) error {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	verdict := make(chan error, 1)
	go func() {
		conn, err := lis.Accept()
		if err != nil {
			verdict <- err
			return
		}
		verdict <- conn.(*tls.Conn).Handshake()
		_ = conn.Close()
	}()
	conn, err := tls.Dial("tcp", lis.Addr().String(), client)
	if err != nil {
		return err
	}
	defer conn.Close()
	select {
	case err := <-verdict:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the server never finished its handshake")
		return nil
	}
}

func TestAJoinerTrustsOnlyTheServerItsTokenPins(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	server := MemberServerTLS(keypair(t, ca, Identity{RoleMember, "cp1"}, true))
	if err := handshake(t, server, PinnedClientTLS(ca.Pin())); err != nil {
		t.Errorf("the pinned CA's member refused: %v", err)
	}
	if err := handshake(t, server, PinnedClientTLS(other.Pin())); !errors.Is(err, ErrPinMismatch) {
		t.Errorf("another cluster's member: %v, want ErrPinMismatch", err)
	}
	// A node of the right cluster cannot pose as a member.
	nodeServer := MemberServerTLS(keypair(t, ca, Identity{RoleNode, "n1"}, true))
	if err := handshake(t, nodeServer, PinnedClientTLS(ca.Pin())); err == nil {
		t.Error("a node certificate passed as a member's")
	}
}

func TestMembersAndWorkersCheckEachOthersRoles(t *testing.T) {
	ca := newTestCA(t)
	member := keypair(t, ca, Identity{RoleMember, "cp1"}, false)
	n1 := keypair(t, ca, Identity{RoleNode, "n1"}, false)
	n2 := keypair(t, ca, Identity{RoleNode, "n2"}, false)
	worker := NodeServerTLS(ca.Pool(), n1)
	if err := handshake(t, worker, NodeClientTLS(ca.Pool(), member, "n1")); err != nil {
		t.Errorf("a member reading n1's worker: %v", err)
	}
	if err := handshake(t, worker, NodeClientTLS(ca.Pool(), member, "n2")); err == nil || !strings.Contains(err.Error(), "node n2") {
		t.Errorf("n1's worker answering for n2: %v, want refused", err)
	}
	if err := handshake(t, worker, NodeClientTLS(ca.Pool(), n2, "n1")); err == nil {
		t.Error("node n2 called n1's worker")
	}
	if err := handshake(t, worker, NodesClientTLS(ca.Pool(), member)); err != nil {
		t.Errorf("the gateway calling a node's function server: %v", err)
	}
	if err := handshake(t, MemberServerTLS(member), NodesClientTLS(ca.Pool(), member)); err == nil {
		t.Error("a member passed as a node's function server")
	}
}

func TestVerifyPeerSaysWhyACertificateIsRefused(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	now := time.Now()
	admin := keypair(t, ca, Identity{RoleAdmin, "admin"}, false).Leaf()
	if id, err := VerifyPeer(ca.Pool(), []*x509.Certificate{admin}, now); err != nil || id != (Identity{RoleAdmin, "admin"}) {
		t.Errorf("VerifyPeer(admin) = %v, %v", id, err)
	}
	for name, tc := range map[string]struct {
		certs []*x509.Certificate
		at    time.Time
		want  string
	}{
		"none":          {nil, now, "no client certificate"},
		"other cluster": {[]*x509.Certificate{keypair(t, other, Identity{RoleAdmin, "admin"}, false).Leaf()}, now, "not issued by this cluster's CA"},
		"expired":       {[]*x509.Certificate{admin}, admin.NotAfter.Add(time.Second), "expired"},
	} {
		if _, err := VerifyPeer(ca.Pool(), tc.certs, tc.at); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}

func TestShortLifetimesRenewInTheFuture(t *testing.T) {
	ca := newTestCA(t)
	ca.Lifetime = 15 * time.Second
	now := time.Now()
	certPEM, _, err := ca.Issue(Identity{RoleNode, "n1"}, nil, now)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if got := cert.NotAfter.Sub(now); got < 14*time.Second || got > 16*time.Second {
		t.Errorf("lifetime %s, want 15s", got)
	}
	at := RenewAt(cert)
	if !at.After(now) || !at.Before(cert.NotAfter) || NeedsRenewal(cert, now) || !NeedsRenewal(cert, at) {
		t.Errorf("renewal at %s for a certificate from %s to %s: want between now and expiry", at, cert.NotBefore, cert.NotAfter)
	}
}

func TestCredentialFilesArePrivateAndRoundTrip(t *testing.T) {
	ca := newTestCA(t)
	certPEM, keyPEM, err := ca.Issue(Identity{RoleAdmin, "admin"}, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "creds", CredentialFileName("127.0.0.1:7070"))
	want := Credential{Server: "127.0.0.1:7070", CA: string(ca.CertPEM), Cert: string(certPEM), Key: string(keyPEM)}
	if err := WriteCredential(path, want); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 || filepath.Base(path) != "127.0.0.1_7070.yaml" {
		t.Errorf("credential file %s: %v %v, want mode 0600", path, st.Mode(), err)
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("credentials dir: %v %v, want mode 0700", st.Mode(), err)
	}
	got, err := ReadCredential(path)
	if err != nil || got != want || !HasCredential(path) {
		t.Fatalf("ReadCredential = %+v, %v", got, err)
	}
	if _, err := got.ClientTLS(); err != nil {
		t.Errorf("ClientTLS: %v", err)
	}

	dir := filepath.Join(t.TempDir(), "pki")
	csr, nodeKey, err := NewRequest("n1")
	if err != nil {
		t.Fatal(err)
	}
	nodeCert, err := ca.SignRequest(csr, Identity{RoleNode, "n1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := SaveNodeCredential(dir, NodeCredential{CAPEM: ca.CertPEM, CertPEM: nodeCert, KeyPEM: nodeKey}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(dir, nodeKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("node key: %v %v, want mode 0600", st.Mode(), err)
	}
	nc, err := LoadNodeCredential(dir)
	if err != nil || string(nc.KeyPEM) != string(nodeKey) {
		t.Fatalf("LoadNodeCredential: %v", err)
	}
	if _, err := LoadNodeCredential(t.TempDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadNodeCredential of an empty dir: %v, want ErrNotExist", err)
	}
}
