package cliclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/errdefs"
)

// Credential is the admin credential a client presents: a YAML file with
// the cluster CA, a certificate and its key (auth.Credential), which
// `wasmorch up` and `server` write to <data-dir>/admin.yaml and to the
// user's credentials directory.
type Credential struct {
	Path string
	pool *x509.CertPool
	kp   *auth.Keypair
}

// LoadCredential reads a credential file.
func LoadCredential(path string) (*Credential, error) {
	c, err := auth.ReadCredential(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, &Error{What: fmt.Sprintf("the credential file %s does not exist", path), Hint: "point --credentials (or WASMORCH_CREDENTIALS) at <data-dir>/admin.yaml of a server", Cause: err}
		}
		return nil, &Error{What: "cannot read the credential " + path + ": " + OneLine(err.Error()), Hint: "use <data-dir>/admin.yaml as the server wrote it", Cause: err}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(c.CA)) {
		return nil, Errorf("use <data-dir>/admin.yaml as the server wrote it", "the credential %s holds no valid CA certificate", path)
	}
	kp, err := auth.NewKeypair([]byte(c.Cert), []byte(c.Key))
	if err != nil {
		return nil, &Error{What: fmt.Sprintf("the credential %s is damaged: %s", path, OneLine(err.Error())), Hint: "use <data-dir>/admin.yaml as the server wrote it", Cause: err}
	}
	return &Credential{Path: path, pool: pool, kp: kp}, nil
}

// CredentialSearch says where FindCredential looks, in order.
type CredentialSearch struct {
	// Explicit is --credentials (or WASMORCH_CREDENTIALS, or the config
	// file's credentials key): it must exist.
	Explicit string
	// ConfigFile is the config file in use; it is used when it holds a
	// credential itself (admin.yaml works as --config).
	ConfigFile string
	// Dir is the user's credentials directory, searched by server address.
	Dir string
}

// FindCredential returns the credential for servers (HOST:PORT[,...]), or
// nil and the places it looked when there is none.
func FindCredential(s CredentialSearch, servers string) (*Credential, []string, error) {
	if s.Explicit != "" {
		c, err := LoadCredential(s.Explicit)
		return c, nil, err
	}
	if s.ConfigFile != "" && auth.HasCredential(s.ConfigFile) {
		c, err := LoadCredential(s.ConfigFile)
		return c, nil, err
	}
	var tried []string
	if s.Dir == "" {
		return nil, nil, nil
	}
	// The addresses as typed first, then the same servers by other names
	// (localhost for 127.0.0.1 and the reverse): a credential is kept under
	// the address its server was started with.
	addrs := strings.Split(servers, ",")
	for i := range addrs {
		addrs[i] = strings.TrimSpace(addrs[i])
	}
	for _, a := range addrs {
		addrs = append(addrs, otherNames(a)...)
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		p := filepath.Join(s.Dir, auth.CredentialFileName(a))
		if seen[p] {
			continue
		}
		seen[p] = true
		tried = append(tried, p)
		c, err := LoadCredential(p)
		if err == nil {
			return c, nil, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, nil, err
		}
	}
	return nil, tried, nil
}

// otherNames are addr's other spellings: the addresses its host name
// resolves to (from /etc/hosts or DNS, within a second), and localhost
// for an address localhost resolves to.
func otherNames(addr string) []string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return nil
		}
		for _, l := range lookup("localhost") {
			if ip.Equal(net.ParseIP(l)) {
				return []string{net.JoinHostPort("localhost", port)}
			}
		}
		return nil
	}
	ips := lookup(host)
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, net.JoinHostPort(ip, port))
	}
	return out
}

func lookup(host string) []string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ips, _ := net.DefaultResolver.LookupHost(ctx, host)
	return ips
}

// WithCredential makes a client present cred; without it (nil) the client
// refuses to talk to any server and says where it looked (tried).
func WithCredential(cred *Credential, tried []string) DialOption {
	return func(o *dialOptions) { o.cred, o.tried = cred, tried }
}

// DialOption configures Dial.
type DialOption func(*dialOptions)

type dialOptions struct {
	cred  *Credential
	tried []string
}

// errNoCredential ends the handshake of a client without a credential: it
// cannot check the server, so it sends it nothing.
var errNoCredential = errors.New("no credential for this server")

func (o dialOptions) transport(d *dialLog) credentials.TransportCredentials {
	var cfg *tls.Config
	if o.cred == nil {
		cfg = &tls.Config{
			MinVersion:            tls.VersionTLS13,
			InsecureSkipVerify:    true, // nothing to verify against: refused below
			VerifyPeerCertificate: func([][]byte, [][]*x509.Certificate) error { return errNoCredential },
		}
	} else {
		cfg = auth.MemberClientTLS(o.cred.pool, o.cred.kp)
	}
	return &recordingCreds{TransportCredentials: credentials.NewTLS(cfg), d: d}
}

// recordingCreds remembers how the latest handshake went, so that a
// connection that failed there is explained as a credential problem.
type recordingCreds struct {
	credentials.TransportCredentials
	d *dialLog
}

func (r *recordingCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, ai, err := r.TransportCredentials.ClientHandshake(ctx, authority, raw)
	r.d.mu.Lock()
	r.d.handshakeErr = err
	r.d.mu.Unlock()
	return conn, ai, err
}

func (r *recordingCreds) Clone() credentials.TransportCredentials {
	return &recordingCreds{TransportCredentials: r.TransportCredentials.Clone(), d: r.d}
}

// handshakeFailure returns why the latest TLS handshake failed, if the
// server was reached but the handshake was not.
func (d *dialLog) handshakeFailure() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.connected {
		return nil
	}
	return d.handshakeErr
}

// credentialError explains a failed handshake.
func (c *Client) credentialError(err error) error {
	if errors.Is(err, errNoCredential) {
		where := "there is none"
		if len(c.opts.tried) > 0 {
			where = "none in " + strings.Join(c.opts.tried, ", ")
		}
		return &Error{
			What:  fmt.Sprintf("no credential for the wasmorch server at %s (%s)", c.addr, where),
			Hint:  "on the server's machine 'wasmorch up' or 'server' writes one there; elsewhere copy <data-dir>/admin.yaml from the server and pass --credentials FILE",
			Cause: errors.Join(errdefs.ErrUnauthenticated, err),
		}
	}
	var notTLS tls.RecordHeaderError
	if errors.As(err, &notTLS) {
		// Something answered, but not a TLS server: most often the
		// gateway's or the metrics port given for the API's.
		what := "does not speak TLS"
		if bytes.HasPrefix(notTLS.RecordHeader[:], []byte("HTTP/")) {
			what = "answers plain HTTP (a gateway or metrics port?)"
		}
		return &Error{
			What:  fmt.Sprintf("%s %s: it is not a wasmorch API address", c.addr, what),
			Hint:  "point --server at the API address (what 'up' or 'server' got as --api, 127.0.0.1:7070 by default)",
			Cause: errors.Join(errdefs.ErrInvalidArgument, err),
		}
	}
	path := "(none)"
	if c.opts.cred != nil {
		path = c.opts.cred.Path
	}
	return &Error{
		What:  fmt.Sprintf("the wasmorch server at %s is not the cluster of the credential %s: %s", c.addr, path, OneLine(err.Error())),
		Hint:  "use that server's <data-dir>/admin.yaml (--credentials FILE), or check --server",
		Cause: errors.Join(errdefs.ErrUnauthenticated, err),
	}
}

// authFailure explains a call the server refused for its credential.
func (c *Client) authFailure(cat error) error {
	msg := OneLine(cat.Error())
	path := "(none)"
	if c.opts.cred != nil {
		path = c.opts.cred.Path
	}
	if errdefs.IsPermissionDenied(cat) {
		return &Error{What: fmt.Sprintf("the wasmorch server at %s refused the call: %s", c.addr, msg), Hint: "use an admin credential (<data-dir>/admin.yaml of a server) with --credentials", Cause: cat}
	}
	return &Error{What: fmt.Sprintf("the wasmorch server at %s refused the credential %s: %s", c.addr, path, msg), Hint: "use that server's <data-dir>/admin.yaml (--credentials FILE)", Cause: cat}
}
