// Package auth is the cluster's identity: a certificate authority created
// at the first server start, the certificates it issues (to members, to
// admins for the CLI, and to nodes from their own key), the identity a
// peer's certificate carries, and join tokens with which an agent proves,
// once, that it may receive a node certificate. It is decision logic and
// crypto only: where tokens are kept and how TLS is wired live elsewhere.
package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base32"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

// Role is what a certificate's holder may do.
type Role string

// The roles, spelt as the certificate's organizational unit.
const (
	RoleAdmin  Role = "admin"  // the CLI: everything on the Control API
	RoleNode   Role = "node"   // an agent: its own node only, on the Agent API
	RoleMember Role = "member" // a control-plane member: serves the API
)

// Lifetimes of what the CA issues. A holder renews when a third is left.
// A node's certificate is short-lived: revoking one (removing the node)
// puts its serial on a list that is kept only until the certificate would
// have expired, so a day's lifetime keeps that list to a day of removals;
// an agent renews it every 16 hours over its session.
const (
	CALifetime       = 10 * 365 * 24 * time.Hour
	CertLifetime     = 365 * 24 * time.Hour
	NodeCertLifetime = 24 * time.Hour
	organization     = "wasmorch"
)

// The names certificates are verified against, whatever address a peer
// was dialled at: every member certificate carries MemberServerName and
// every node certificate NodeServerName, so a node cannot pose as a
// member (or the reverse) and addresses can change without new
// certificates.
const (
	MemberServerName = "member.wasmorch"
	NodeServerName   = "node.wasmorch"
)

// Identity is who a certificate names.
type Identity struct {
	Role Role
	Name string // node or member name; "admin" for admins
}

func (id Identity) String() string { return string(id.Role) + ":" + id.Name }

// CA is the cluster's certificate authority.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	// Lifetime of the certificates it issues; zero means CertLifetime
	// (NodeCertLifetime for nodes). Tests shorten it to see rotation
	// happen.
	Lifetime time.Duration
	key      *ecdsa.PrivateKey
}

// KeyPEM is the CA's private key, PEM-encoded: what a joining
// control-plane member receives so that it can issue certificates too.
func (ca *CA) KeyPEM() ([]byte, error) { return encodeKey(ca.key) }

// Pin is the fingerprint of the CA's public key that join tokens carry,
// so that a joining agent or member can tell the real cluster from an
// impostor before it has the CA certificate.
func (ca *CA) Pin() string { return PinOf(ca.Cert) }

// PinOf is the lowercase base32 SHA-256 of a certificate's public key.
func PinOf(cert *x509.Certificate) string {
	h := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return strings.ToLower(tokenEncoding.EncodeToString(h[:]))
}

// Pool is a certificate pool holding only the CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// SaveCA writes a CA received from another member into dir, as
// LoadOrCreateCA would have created it there.
func SaveCA(dir string, certPEM, keyPEM []byte) error {
	if _, err := parseCA(certPEM, keyPEM); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := writeFile(filepath.Join(dir, caKeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, caCertFile), certPEM, 0o644)
}

// File names of the CA in its directory.
const (
	caCertFile = "ca.crt"
	caKeyFile  = "ca.key"
)

// CACertPath is where LoadOrCreateCA keeps the CA certificate in dir.
func CACertPath(dir string) string { return filepath.Join(dir, caCertFile) }

// CopyCA copies the CA kept in src (as LoadOrCreateCA keeps one) into dst,
// after checking that its key and certificate belong together: how the
// members of a statically bootstrapped cluster come to share one CA.
func CopyCA(src, dst string) error {
	certPEM, err := os.ReadFile(filepath.Join(src, caCertFile))
	if err != nil {
		return fmt.Errorf("read the cluster CA: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(src, caKeyFile))
	if err != nil {
		return fmt.Errorf("read the cluster CA: %w", err)
	}
	if _, err := parseCA(certPEM, keyPEM); err != nil {
		return fmt.Errorf("the CA in %s: %w", src, err)
	}
	return SaveCA(dst, certPEM, keyPEM)
}

// LoadOrCreateCA loads the CA kept in dir, or creates it (and dir) when
// there is none; created says which. A directory holding only one of the
// two files is an error rather than a silent new CA.
func LoadOrCreateCA(dir string) (ca *CA, created bool, err error) {
	certPath, keyPath := filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		ca, err := parseCA(certPEM, keyPEM)
		if err != nil {
			return nil, false, fmt.Errorf("CA in %s: %w", dir, err)
		}
		return ca, false, nil
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
	case certErr != nil && !errors.Is(certErr, os.ErrNotExist):
		return nil, false, fmt.Errorf("read CA certificate: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, os.ErrNotExist):
		return nil, false, fmt.Errorf("read CA key: %w", keyErr)
	default:
		return nil, false, errdefs.Preconditionf("%s holds only one of %s and %s: restore the other or remove both to create a new CA (every credential would have to be issued again)", dir, caCertFile, caKeyFile)
	}
	ca, err = newCA()
	if err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create %s: %w", dir, err)
	}
	keyPEM, err = encodeKey(ca.key)
	if err != nil {
		return nil, false, err
	}
	// The key first: a crash between the two writes leaves a key without a
	// certificate, which the next start reports instead of overwriting.
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return nil, false, err
	}
	if err := writeFile(certPath, ca.CertPEM, 0o644); err != nil {
		return nil, false, err
	}
	return ca, true, nil
}

func newCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{organization}, CommonName: "wasmorch cluster CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}, nil
}

func parseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errdefs.Invalidf("CA key is not PEM")
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse CA key: %w", err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, errdefs.Invalidf("CA key does not match the CA certificate")
	}
	if !cert.IsCA {
		return nil, errdefs.Invalidf("CA certificate is not a CA")
	}
	return &CA{Cert: cert, CertPEM: certPEM, key: key}, nil
}

// Issue creates a key pair and a certificate for id, valid for hosts (DNS
// names or IP addresses; members serve on them). It returns both as PEM.
func (ca *CA) Issue(id Identity, hosts []string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := ca.sign(&key.PublicKey, id, hosts, now, 0)
	if err != nil {
		return nil, nil, err
	}
	if keyPEM, err = encodeKey(key); err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// SignRequest issues a certificate for id to the key of a certificate
// signing request (an agent keeps its private key to itself). The names in
// the request are ignored: the identity is the CA's decision.
func (ca *CA) SignRequest(csrDER []byte, id Identity, now time.Time) ([]byte, error) {
	return ca.SignRequestFor(csrDER, id, now, 0)
}

// SignRequestFor is SignRequest for a certificate living life (zero: the
// CA's lifetime for id's role; never past the CA's own expiry).
func (ca *CA) SignRequestFor(csrDER []byte, id Identity, now time.Time, life time.Duration) ([]byte, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, errdefs.Invalidf("certificate request is not valid: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, errdefs.Invalidf("certificate request signature: %v", err)
	}
	der, err := ca.sign(csr.PublicKey, id, nil, now, life)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// LifetimeFor is how long the certificates ca issues to role live.
func (ca *CA) LifetimeFor(role Role) time.Duration {
	switch {
	case ca.Lifetime > 0:
		return ca.Lifetime
	case role == RoleNode:
		return NodeCertLifetime
	}
	return CertLifetime
}

func (ca *CA) sign(pub any, id Identity, hosts []string, now time.Time, life time.Duration) ([]byte, error) {
	if err := id.validate(); err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	if life <= 0 {
		life = ca.LifetimeFor(id.Role)
	}
	notAfter := now.Add(life)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	// Backdated for clocks a little behind the CA's, by a small share of
	// the lifetime so that renewal at two thirds stays in the future.
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{organization}, OrganizationalUnit: []string{string(id.Role)}, CommonName: id.Name},
		NotBefore:    now.Add(-min(time.Minute, life/10)),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	switch id.Role {
	case RoleMember: // serves the API
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.DNSNames = append(tmpl.DNSNames, MemberServerName)
	case RoleNode: // serves logs and functions to the members
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.DNSNames = append(tmpl.DNSNames, NodeServerName)
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", id, err)
	}
	return der, nil
}

func (id Identity) validate() error {
	switch id.Role {
	case RoleAdmin, RoleNode, RoleMember:
	default:
		return errdefs.Invalidf("role %q is not admin, node or member", id.Role)
	}
	if id.Name == "" || len(id.Name) > 253 || strings.ContainsAny(id.Name, " /,\n") {
		return errdefs.Invalidf("name %q cannot go in a certificate", id.Name)
	}
	return nil
}

// IdentityOf reads who a certificate issued by this package names. The
// caller has verified the chain (the TLS handshake does).
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	if len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != organization || len(cert.Subject.OrganizationalUnit) != 1 {
		return Identity{}, errdefs.Invalidf("certificate %q was not issued to a wasmorch identity", cert.Subject.CommonName)
	}
	id := Identity{Role: Role(cert.Subject.OrganizationalUnit[0]), Name: cert.Subject.CommonName}
	return id, id.validate()
}

// Serial is how a certificate's serial number is written in the
// revocation list and shown to people: in decimal.
func Serial(cert *x509.Certificate) string { return cert.SerialNumber.String() }

// NeedsRenewal says whether a certificate has a third or less of its
// lifetime left at now, the point at which its holder asks for a new one.
func NeedsRenewal(cert *x509.Certificate, now time.Time) bool {
	return !now.Before(RenewAt(cert))
}

// RenewAt is when a certificate's holder asks for a new one: at two thirds
// of its lifetime.
func RenewAt(cert *x509.Certificate) time.Time {
	life := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotBefore.Add(life * 2 / 3)
}

// ParseCertificate decodes the first PEM certificate in b.
func ParseCertificate(b []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errdefs.Invalidf("not a PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, errdefs.Invalidf("parse certificate: %v", err)
	}
	return cert, nil
}

// Join tokens look like "wmt_<id>.<secret>.<pin>": the id names the
// stored record (secret hashed, role, expiry), the secret proves
// possession, and the pin is the fingerprint of the cluster CA's key, with
// which the joiner checks the server it talks to before it trusts it (as
// Docker Swarm's tokens carry the CA digest).
const tokenPrefix = "wmt_"

var tokenEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// Token is a join token.
type Token struct {
	ID     string
	Secret string
	CAPin  string
}

func (t Token) String() string { return tokenPrefix + t.ID + "." + t.Secret + "." + t.CAPin }

// NewToken makes a token with a random id (40 bits) and secret (160 bits)
// for the cluster of ca.
func (ca *CA) NewToken() (Token, error) {
	t, err := newToken()
	t.CAPin = ca.Pin()
	return t, err
}

func newToken() (Token, error) {
	id, err := randomString(5)
	if err != nil {
		return Token{}, err
	}
	secret, err := randomString(20)
	if err != nil {
		return Token{}, err
	}
	return Token{ID: id, Secret: secret}, nil
}

// ParseToken checks a token's shape.
func ParseToken(s string) (Token, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), tokenPrefix)
	parts := strings.Split(rest, ".")
	if !ok || len(parts) != 3 || len(parts[0]) != 8 || len(parts[1]) != 32 || len(parts[2]) != 52 || !isBase32(parts[0]) || !isBase32(parts[1]) || !isBase32(parts[2]) {
		return Token{}, errdefs.Invalidf("join token is malformed: expected wmt_<8 characters>.<32 characters>.<52 characters>, as 'wasmorch token create' prints")
	}
	return Token{ID: parts[0], Secret: parts[1], CAPin: parts[2]}, nil
}

// SecretHash is what is stored of a token's secret.
func SecretHash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// CheckToken verifies a presented token against its stored hash and expiry.
func CheckToken(t Token, storedHash []byte, expires, now time.Time) error {
	if subtle.ConstantTimeCompare(SecretHash(t.Secret), storedHash) != 1 {
		return errdefs.Invalidf("join token %s is not valid", t.ID)
	}
	if !now.Before(expires) {
		return errdefs.Preconditionf("join token %s expired at %s: create a new one with 'wasmorch token create'", t.ID, expires.UTC().Format(time.RFC3339))
	}
	return nil
}

func randomString(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("read random bytes: %w", err)
	}
	return strings.ToLower(tokenEncoding.EncodeToString(b)), nil
}

func isBase32(s string) bool {
	_, err := tokenEncoding.DecodeString(strings.ToUpper(s))
	return err == nil
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n, nil
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// writeFile writes b to path through a temporary file, so that a crash
// never leaves half a key.
func writeFile(path string, b []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// NewRequest makes a key pair and a certificate signing request for it:
// the key stays with its holder, the request goes to the CA.
func NewRequest(name string) (csrDER, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	csrDER, err = x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("create certificate request: %w", err)
	}
	if keyPEM, err = encodeKey(key); err != nil {
		return nil, nil, err
	}
	return csrDER, keyPEM, nil
}
