package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

// Keypair holds the certificate a process presents, swapped in place when
// it is renewed: connections made after the swap use the new one, those
// already open keep theirs.
type Keypair struct {
	cur atomic.Pointer[tls.Certificate]
}

// NewKeypair parses a PEM certificate (optionally followed by its chain)
// and key.
func NewKeypair(certPEM, keyPEM []byte) (*Keypair, error) {
	k := &Keypair{}
	return k, k.Set(certPEM, keyPEM)
}

// Set replaces the certificate.
func (k *Keypair) Set(certPEM, keyPEM []byte) error {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return errdefs.Invalidf("certificate and key: %v", err)
	}
	k.cur.Store(&c)
	return nil
}

// Leaf is the current certificate.
func (k *Keypair) Leaf() *x509.Certificate { return k.cur.Load().Leaf }

// Identity is who the current certificate names.
func (k *Keypair) Identity() (Identity, error) { return IdentityOf(k.Leaf()) }

func (k *Keypair) get() *tls.Certificate { return k.cur.Load() }

// MemberServerTLS is what a member serves its API with: its certificate
// (with the CA after it, so that a joiner holding only a pin can check
// the chain) and a request for a client certificate, which VerifyPeer
// then judges, so that a refusal can say why.
func MemberServerTLS(k *Keypair) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		ClientAuth:     tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return k.get(), nil },
	}
}

// MemberClientTLS dials a member: the member must hold a member
// certificate of the CA in pool; the client presents k (nil: none).
func MemberClientTLS(pool *x509.CertPool, k *Keypair) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: MemberServerName}
	if k != nil {
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return k.get(), nil }
	}
	return c
}

// ErrPinMismatch is the refusal of a server whose CA is not the one a
// join token names.
var ErrPinMismatch = errors.New("the server's CA does not match the join token")

// PinnedClientTLS dials a member before the joiner has the CA: the
// server's chain must hold a CA whose key matches pin (from the join
// token) and a member certificate that CA issued. Go's verification of
// the name is replaced by this check, which is why verification is
// skipped first; the client presents no certificate.
func PinnedClientTLS(pin string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // VerifyPeerCertificate checks the chain against the pin.
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) < 2 {
				return fmt.Errorf("%w: it sent no CA certificate", ErrPinMismatch)
			}
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			for _, r := range raw[1:] {
				ca, err := x509.ParseCertificate(r)
				if err != nil || !ca.IsCA || PinOf(ca) != pin {
					continue
				}
				pool := x509.NewCertPool()
				pool.AddCert(ca)
				_, err = leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: MemberServerName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
				return err
			}
			return ErrPinMismatch
		},
	}
}

// NodeServerTLS is what a worker serves (logs) with: only members of the
// cluster may connect.
func NodeServerTLS(pool *x509.CertPool, k *Keypair) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      pool,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return k.get(), nil },
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := IdentityOf(cs.PeerCertificates[0])
			if err != nil {
				return err
			}
			if id.Role != RoleMember {
				return fmt.Errorf("%s may not call a worker: only control-plane members may", id)
			}
			return nil
		},
	}
}

// NodeClientTLS dials the worker of node: its certificate must be that
// node's, issued by the CA in pool; the member presents k.
func NodeClientTLS(pool *x509.CertPool, k *Keypair, node string) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              pool,
		ServerName:           NodeServerName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return k.get(), nil },
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := IdentityOf(cs.PeerCertificates[0])
			if err != nil {
				return err
			}
			if id != (Identity{Role: RoleNode, Name: node}) {
				return fmt.Errorf("the worker answering for node %s presented the certificate of %s", node, id)
			}
			return nil
		},
	}
}

// VerifyPeer judges the certificates a client presented: issued by the CA
// in pool for client use, valid at now, naming a wasmorch identity.
func VerifyPeer(pool *x509.CertPool, certs []*x509.Certificate, now time.Time) (Identity, error) {
	if len(certs) == 0 {
		return Identity{}, errors.New("no client certificate was presented")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	leaf := certs[0]
	if now.After(leaf.NotAfter) {
		return Identity{}, fmt.Errorf("the client certificate of %q expired at %s", leaf.Subject.CommonName, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		var ua x509.UnknownAuthorityError
		if errors.As(err, &ua) {
			return Identity{}, fmt.Errorf("the client certificate of %q was not issued by this cluster's CA", leaf.Subject.CommonName)
		}
		return Identity{}, fmt.Errorf("the client certificate of %q is not valid here: %v", leaf.Subject.CommonName, err)
	}
	return IdentityOf(leaf)
}

// PoolOf is a pool of the PEM certificates in b (a CA certificate).
func PoolOf(b []byte) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(b)
	return p
}

// NodesClientTLS dials the function server of any node of the cluster
// (the gateway shares one connection pool among all workers): the server
// must hold a node certificate of the CA in pool; the member presents k.
func NodesClientTLS(pool *x509.CertPool, k *Keypair) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		RootCAs:              pool,
		ServerName:           NodeServerName,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return k.get(), nil },
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := IdentityOf(cs.PeerCertificates[0])
			if err != nil {
				return err
			}
			if id.Role != RoleNode {
				return fmt.Errorf("the worker presented the certificate of %s, not a node's", id)
			}
			return nil
		},
	}
}
