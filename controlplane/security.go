package controlplane

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/controlplane/certrecords"
	"google.golang.org/grpc/credentials"

	"github.com/wasmorch/wasmorch/controlplane/api"
	"github.com/wasmorch/wasmorch/controlplane/membership"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// The cluster's identity on a member's disk (see docs/operations.md):
//
//	<data-dir>/pki/ca.crt, ca.key        the cluster CA (the same on every member)
//	<data-dir>/pki/member.crt, member.key this member's certificate, for the API it serves
//	<data-dir>/admin.yaml                 an admin credential for the CLI
//
// and, when Config.UserCredentialsDir is set, a copy of admin.yaml there
// named after the API address, where the CLI of the same user finds it.
const (
	pkiDirName     = "pki"
	memberCertFile = "member.crt"
	memberKeyFile  = "member.key"
	adminFileName  = "admin.yaml"
)

// pkiDir is where a member keeps its CA and certificate.
func pkiDir(dataDir string) string { return filepath.Join(dataDir, pkiDirName) }

// AdminCredentialPath is the admin credential a member keeps in its data
// dir.
func AdminCredentialPath(dataDir string) string { return filepath.Join(dataDir, adminFileName) }

// security is a member's CA and the certificate it serves with.
type security struct {
	ca     *auth.CA
	member *auth.Keypair
	// created is true when this start created the CA (a new cluster).
	created bool
}

// hasCA says whether the data dir holds a CA already.
func hasCA(dataDir string) bool {
	_, err := os.Stat(auth.CACertPath(pkiDir(dataDir)))
	return err == nil
}

// newSecurity loads (or, on a new cluster, creates) the CA, and issues this
// member a certificate when it has none or its current one is due for
// renewal. apiAddr is the bound API address, put in the certificate.
func newSecurity(cfg Config, apiAddr string) (*security, error) {
	ca, created, err := auth.LoadOrCreateCA(pkiDir(cfg.DataDir))
	if err != nil {
		return nil, err
	}
	ca.Lifetime = cfg.CertLifetime
	sec := &security{ca: ca, created: created}
	certPEM, err1 := os.ReadFile(filepath.Join(pkiDir(cfg.DataDir), memberCertFile))
	keyPEM, err2 := os.ReadFile(filepath.Join(pkiDir(cfg.DataDir), memberKeyFile))
	if err1 == nil && err2 == nil {
		if kp, err := auth.NewKeypair(certPEM, keyPEM); err == nil && sec.valid(kp.Leaf()) {
			sec.member = kp
		}
	}
	if sec.member == nil {
		if err := sec.renewMember(cfg, apiAddr); err != nil {
			return nil, err
		}
	}
	return sec, nil
}

// valid says whether a certificate was issued by this CA and is not yet
// due for renewal.
func (sec *security) valid(cert *x509.Certificate) bool {
	if _, err := cert.Verify(x509.VerifyOptions{Roots: sec.ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return false
	}
	return !auth.NeedsRenewal(cert, time.Now())
}

// renewMember issues this member a new certificate and saves it.
func (sec *security) renewMember(cfg Config, apiAddr string) error {
	var hosts []string
	if host, _, err := net.SplitHostPort(apiAddr); err == nil && host != "" {
		hosts = append(hosts, host)
	}
	certPEM, keyPEM, err := sec.ca.Issue(auth.Identity{Role: auth.RoleMember, Name: cfg.Name}, hosts, time.Now())
	if err != nil {
		return err
	}
	// The CA goes after the certificate: a joiner checks it against the
	// pin in its token.
	chain := append(append([]byte{}, certPEM...), sec.ca.CertPEM...)
	dir := pkiDir(cfg.DataDir)
	if err := writePrivate(filepath.Join(dir, memberKeyFile), keyPEM); err != nil {
		return err
	}
	if err := writePrivate(filepath.Join(dir, memberCertFile), chain); err != nil {
		return err
	}
	if sec.member == nil {
		sec.member, err = auth.NewKeypair(chain, keyPEM)
		return err
	}
	return sec.member.Set(chain, keyPEM)
}

// writeAdminCredential keeps an admin credential in the data dir, issuing
// a new one when there is none, it names another address, or it is due
// for renewal, and copies it into the user's credentials directory (when
// set) under the name of the API address.
func (sec *security) writeAdminCredential(cfg Config, server string) error {
	return sec.writeAdminCredentialUnless(cfg, server, nil)
}

// writeAdminCredentialUnless is writeAdminCredential that also issues a
// new credential when the current one is revoked.
func (sec *security) writeAdminCredentialUnless(cfg Config, server string, revoked func(serial string) bool) error {
	path := AdminCredentialPath(cfg.DataDir)
	cur, err := auth.ReadCredential(path)
	if cert, perr := auth.ParseCertificate([]byte(cur.Cert)); err == nil && perr == nil && revoked != nil && revoked(auth.Serial(cert)) {
		err = fs.ErrNotExist // revoked: a new one
	}
	if err == nil && cur.Server == server {
		if cert, err := auth.ParseCertificate([]byte(cur.Cert)); err == nil && sec.valid(cert) {
			return sec.copyAdminCredential(cfg, server, cur)
		}
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("admin credential: %w", err)
	}
	certPEM, keyPEM, err := sec.ca.Issue(auth.Identity{Role: auth.RoleAdmin, Name: "admin"}, nil, time.Now())
	if err != nil {
		return err
	}
	c := auth.Credential{Server: server, CA: string(sec.ca.CertPEM), Cert: string(certPEM), Key: string(keyPEM)}
	if err := auth.WriteCredential(path, c); err != nil {
		return err
	}
	return sec.copyAdminCredential(cfg, server, c)
}

func (sec *security) copyAdminCredential(cfg Config, server string, c auth.Credential) error {
	if cfg.UserCredentialsDir == "" {
		return nil
	}
	return auth.WriteCredential(filepath.Join(cfg.UserCredentialsDir, auth.CredentialFileName(server)), c)
}

// keepCertificates renews this member's certificate and the admin
// credential at two thirds of their lifetime, and the admin credential
// at once when it is revoked, until ctx ends. The admin credential is
// recorded as issued, so that 'wasmorch credentials' lists it.
func (s *Server) keepCertificates(ctx context.Context) error {
	s.keepAdminCredential(ctx)
	for {
		changed := s.api.RevocationsChanged()
		next := auth.RenewAt(s.sec.member.Leaf())
		if cur, err := auth.ReadCredential(AdminCredentialPath(s.cfg.DataDir)); err == nil {
			if cert, err := auth.ParseCertificate([]byte(cur.Cert)); err == nil && auth.RenewAt(cert).Before(next) {
				next = auth.RenewAt(cert)
			}
		}
		wait := time.Until(next)
		// Woken at least hourly, so that a suspended machine catches up.
		wait = min(max(wait, 100*time.Millisecond), time.Hour)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		case <-changed:
		}
		if auth.NeedsRenewal(s.sec.member.Leaf(), time.Now()) {
			if err := s.sec.renewMember(s.cfg, s.APIAddr()); err != nil {
				s.log.Warn("could not renew this member's certificate", "err", err)
			} else {
				s.log.Info("renewed this member's certificate", "expires", s.sec.member.Leaf().NotAfter)
			}
		}
		s.keepAdminCredential(ctx)
	}
}

// keepAdminCredential issues a new admin credential when it is due, names
// another address or is revoked, and records it.
func (s *Server) keepAdminCredential(ctx context.Context) {
	revoked := func(serial string) bool {
		r, err := s.api.Revoked(ctx, serial)
		return err == nil && r
	}
	if err := s.sec.writeAdminCredentialUnless(s.cfg, s.clientAddr(), revoked); err != nil {
		s.log.Warn("could not renew the admin credential", "err", err)
		return
	}
	cur, err := auth.ReadCredential(AdminCredentialPath(s.cfg.DataDir))
	if err != nil {
		return
	}
	cert, err := auth.ParseCertificate([]byte(cur.Cert))
	if err != nil {
		return
	}
	if err := certrecords.Record(ctx, s.store.Client, []byte(cur.Cert), auth.Identity{Role: auth.RoleAdmin, Name: cert.Subject.CommonName}); err != nil && ctx.Err() == nil {
		s.log.Warn("could not record the admin credential", "err", err)
	}
}

// clientAddr is the API address a client on this machine dials.
func (s *Server) clientAddr() string { return dialableAddr(s.APIAddr()) }

// dialableAddr turns a listen address into one to connect to: a wildcard
// host (0.0.0.0, ::) becomes loopback.
func dialableAddr(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}

// AdminCredential is the credential the member wrote for its admins.
func (s *Server) AdminCredential() (auth.Credential, error) {
	return auth.ReadCredential(AdminCredentialPath(s.cfg.DataDir))
}

// CreatedCluster says whether this start created the cluster's CA: the
// first start of a new cluster.
func (s *Server) CreatedCluster() bool { return s.sec.created }

// IssueNodeCredential writes a credential for node into dir, as an agent
// gets by joining with a token: `wasmorch up` gives its own worker one.
func (s *Server) IssueNodeCredential(dir, node string) error {
	csr, keyPEM, err := auth.NewRequest(node)
	if err != nil {
		return err
	}
	id := auth.Identity{Role: auth.RoleNode, Name: node}
	certPEM, err := s.sec.ca.SignRequest(csr, id, time.Now())
	if err != nil {
		return err
	}
	// Recorded as a join's certificate is, so that removing the node
	// revokes it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := certrecords.Record(ctx, s.store.Client, certPEM, id); err != nil {
		return err
	}
	return auth.SaveNodeCredential(dir, auth.NodeCredential{CAPEM: s.sec.ca.CertPEM, CertPEM: certPEM, KeyPEM: keyPEM})
}

// MemberCredentials are transport credentials with this member's identity,
// for tests and tools in the same process that call the API as a member.
func (s *Server) MemberCredentials() credentials.TransportCredentials {
	return credentials.NewTLS(auth.MemberClientTLS(s.sec.ca.Pool(), s.sec.member))
}

func writePrivate(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}

// Join token roles and lifetime (see the API's tokens).
const (
	TokenRoleAgent  = api.TokenRoleAgent
	TokenRoleServer = api.TokenRoleServer
	DefaultTokenTTL = api.DefaultTokenTTL
)

// TokenSpec is what a new join token admits (see the API's tokens).
type TokenSpec = api.TokenSpec

// CreateJoinToken stores a new join token and returns it (a server's first
// start makes one for agents).
func (s *Server) CreateJoinToken(ctx context.Context, spec TokenSpec) (string, *v1.JoinToken, error) {
	return s.api.CreateJoinToken(ctx, spec)
}

// RestoreConfig says where a snapshot becomes a member's data dir.
type RestoreConfig = membership.RestoreConfig

// RestoreSnapshot turns a snapshot (`wasmorch snapshot save`) into the data
// dir of a one-member cluster; see membership.Restore.
func RestoreSnapshot(cfg RestoreConfig) error { return membership.Restore(cfg) }
