package auth

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

// Credential is what a client holds to talk to a cluster, as one YAML file
// (like a kubeconfig): the servers, the CA to check them against, and a
// certificate with its key. Its `server` key makes it usable as a CLI
// config file too (--config FILE).
type Credential struct {
	Server string `json:"server,omitempty"`
	CA     string `json:"ca"`
	Cert   string `json:"cert"`
	Key    string `json:"key"`
}

const credentialHeader = "# wasmorch credential: whoever holds this file controls the cluster; keep it private.\n"

// WriteCredential writes c to path (mode 0600), creating its directory
// (0700) when missing.
func WriteCredential(path string, c Credential) error {
	b, err := yaml.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	return writeFile(path, append([]byte(credentialHeader), b...), 0o600)
}

// ReadCredential reads a credential file; fs.ErrNotExist when there is
// none.
func ReadCredential(path string) (Credential, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Credential{}, err
	}
	var c Credential
	if err := yaml.Unmarshal(b, &c); err != nil {
		return Credential{}, errdefs.Invalidf("%s is not a wasmorch credential: %v", path, err)
	}
	if c.CA == "" || c.Cert == "" || c.Key == "" {
		return Credential{}, errdefs.Invalidf("%s is not a wasmorch credential: it needs ca, cert and key", path)
	}
	return c, nil
}

// HasCredential says whether a YAML file (a CLI config file) holds a
// credential's keys.
func HasCredential(path string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var c Credential
	return yaml.Unmarshal(b, &c) == nil && c.Cert != "" && c.Key != "" && c.CA != ""
}

// CredentialFileName is the file name under which a credential for the
// server at addr is kept in the user's credentials directory.
func CredentialFileName(addr string) string {
	return strings.NewReplacer(":", "_", "/", "_", "[", "", "]", "").Replace(addr) + ".yaml"
}

// UserCredentialsDir is where `wasmorch up` and `server` leave an admin
// credential for the CLI of the same user, and where the CLI looks for
// one by server address: $XDG_CONFIG_HOME/wasmorch/credentials, else
// ~/.config/wasmorch/credentials.
func UserCredentialsDir() (string, error) {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "wasmorch", "credentials"), nil
}

// A node's credential lives in a directory of its own (the agent's
// <data-dir>/pki): the CA certificate, its certificate and its key, which
// never leaves the node.
const (
	nodeCertFile = "node.crt"
	nodeKeyFile  = "node.key"
)

// NodeCredential is a node's credential as kept on disk.
type NodeCredential struct {
	CAPEM, CertPEM, KeyPEM []byte
}

// LoadNodeCredential reads the credential in dir; fs.ErrNotExist when
// the node has none yet.
func LoadNodeCredential(dir string) (NodeCredential, error) {
	var nc NodeCredential
	var errs []error
	for _, f := range []struct {
		name string
		dst  *[]byte
	}{{caCertFile, &nc.CAPEM}, {nodeCertFile, &nc.CertPEM}, {nodeKeyFile, &nc.KeyPEM}} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		errs = append(errs, err)
		*f.dst = b
	}
	return nc, errors.Join(errs...)
}

// SaveNodeCredential writes a node's credential into dir (0700; the key
// 0600), the key and certificate each replaced atomically.
func SaveNodeCredential(dir string, nc NodeCredential) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := writeFile(filepath.Join(dir, caCertFile), nc.CAPEM, 0o644); err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, nodeKeyFile), nc.KeyPEM, 0o600); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, nodeCertFile), nc.CertPEM, 0o644)
}

// RemoveNodeCredential deletes the certificate and key in dir (the CA
// certificate stays): a node whose certificate the cluster refuses joins
// again with a token.
func RemoveNodeCredential(dir string) error {
	var errs []error
	for _, f := range []string{nodeCertFile, nodeKeyFile} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// NodeCertPath is the node certificate's file in dir (tests read it).
func NodeCertPath(dir string) string { return filepath.Join(dir, nodeCertFile) }

// ClientTLS is the TLS configuration of a client presenting c to a
// member of its cluster.
func (c Credential) ClientTLS() (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CA)) {
		return nil, errdefs.Invalidf("the credential holds no valid CA certificate")
	}
	kp, err := NewKeypair([]byte(c.Cert), []byte(c.Key))
	if err != nil {
		return nil, err
	}
	return MemberClientTLS(pool, kp), nil
}
