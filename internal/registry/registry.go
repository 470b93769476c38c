// Package registry speaks to OCI registries with go-containerregistry: it
// pushes a Wasm module as an OCI artifact (the CLI's `push`) and resolves
// an `oci://` reference to what it names, a Wasm module or a container
// image (the control plane, which stores it as a blob). What one registry
// needs — credentials, a CA, whether plain HTTP is allowed — is Settings,
// kept in the cluster as a secret (secret.go); errors.go says in one line
// what went wrong with a reference.
package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Scheme starts every reference wasmorch pulls: "oci://REGISTRY/REPO:TAG"
// or "oci://REGISTRY/REPO@sha256:...".
const Scheme = "oci://"

// Media types of the OCI Wasm artifact layout (CNCF TAG Runtime's
// wasm-oci-artifact): a config of WasmConfigMediaType and one layer of
// WasmLayerMediaType, the module itself. The older wasm-to-oci layout
// (config v1, layer application/vnd.wasm.content.layer.v1+wasm) is read
// too.
const (
	WasmConfigMediaType = "application/vnd.wasm.config.v0+json"
	WasmLayerMediaType  = "application/wasm"

	legacyWasmConfigMediaType = "application/vnd.wasm.config.v1+json"
	legacyWasmLayerMediaType  = "application/vnd.wasm.content.layer.v1+wasm"
)

// headerTimeout is how long a registry may take to start answering a
// request: a registry that accepts connections and then hangs fails a
// pull within it rather than holding it until the caller gives up.
const headerTimeout = 30 * time.Second

// Settings is what wasmorch needs to reach one registry.
type Settings struct {
	// Username and Password are basic-auth credentials (or a token as
	// the password); empty for anonymous access.
	Username, Password string
	// CA is PEM certificates trusted for the registry besides the
	// system's.
	CA []byte
	// PlainHTTP allows http:// to this registry. Without it every request
	// is HTTPS, even to a loopback address.
	PlainHTTP bool
}

// IsReference reports whether s is an oci:// reference rather than a
// file.
func IsReference(s string) bool { return strings.HasPrefix(s, Scheme) }

// Parse parses an oci:// reference ("oci://" is optional here). A
// reference without a tag or digest means the tag "latest", as for
// docker pull.
func Parse(s string, plainHTTP bool) (name.Reference, error) {
	r := strings.TrimPrefix(s, Scheme)
	if r == "" {
		return nil, fmt.Errorf("%q names no repository: use oci://REGISTRY/REPO:TAG", s)
	}
	var opts []name.Option
	if plainHTTP {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.ParseReference(r, opts...)
	if err != nil {
		return nil, fmt.Errorf("%q is not a valid reference (oci://REGISTRY/REPO:TAG or oci://REGISTRY/REPO@sha256:...): %v", s, err)
	}
	return ref, nil
}

// Host is the registry part of a reference ("registry.example.com:5000"),
// the key of its Settings; "" when s does not parse.
func Host(s string) string {
	ref, err := Parse(s, false)
	if err != nil {
		return ""
	}
	return ref.Context().RegistryStr()
}

// options are go-containerregistry's options for reaching ref's registry
// with s: its credentials (or keychain when s has none and keychain is
// not nil), its CA, and HTTPS unless plain HTTP is allowed.
func (s Settings) options(ctx context.Context, keychain authn.Keychain) ([]remote.Option, error) {
	base := remote.DefaultTransport.(*http.Transport).Clone()
	base.ResponseHeaderTimeout = headerTimeout
	if len(s.CA) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(s.CA) {
			return nil, errors.New("the registry's CA holds no PEM certificate")
		}
		base.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(&httpsOnly{base: base, allowHTTP: s.PlainHTTP}),
		// Two tries, not go-containerregistry's default of three with
		// backoff: the caller's deadline is what bounds a pull.
		remote.WithRetryBackoff(remote.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Steps: 2}),
		remote.WithUserAgent("wasmorch"),
	}
	switch {
	case s.Username != "" || s.Password != "":
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: s.Username, Password: s.Password}))
	case keychain != nil:
		opts = append(opts, remote.WithAuthFromKeychain(keychain))
	}
	return opts, nil
}

// errPlainHTTP marks a request over plain HTTP to a registry that does
// not allow it.
var errPlainHTTP = errors.New("plain HTTP is not allowed")

// httpsOnly refuses http:// requests unless plain HTTP is allowed:
// go-containerregistry tries plain HTTP by itself for loopback and
// private addresses, which wasmorch allows only per registry.
type httpsOnly struct {
	base      http.RoundTripper
	allowHTTP bool
}

func (t *httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !t.allowHTTP {
		return nil, fmt.Errorf("%w to %s", errPlainHTTP, req.URL.Host)
	}
	return t.base.RoundTrip(req)
}
