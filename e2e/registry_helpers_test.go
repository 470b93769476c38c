package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/crypto/bcrypt"
)

// The registry tests run Debian's docker-registry (the CNCF distribution
// server, `apt-get install docker-registry`) as a process of their own: a
// config, storage, TLS certificate and htpasswd file under t.TempDir(),
// listening on a free loopback port.

// testRegistry is one running docker-registry.
type testRegistry struct {
	t              *testing.T
	addr           string // 127.0.0.1:port, the registry's host in references
	dir            string
	config         string
	ca             string // the CA's PEM file ("" without TLS)
	user, password string // basic auth ("" without)
	log            string
	cmd            *exec.Cmd
	done           chan struct{}
}

type registryOptions struct {
	tls, auth bool
}

// registryBinary is docker-registry's path, or the test is skipped.
func registryBinary(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Skip("docker-registry is not installed (apt-get install docker-registry; .ci/run installs it)")
	}
	return bin
}

// startRegistry starts a registry on a free loopback port and waits until
// it answers.
func startRegistry(t *testing.T, o registryOptions) *testRegistry {
	t.Helper()
	bin := registryBinary(t)
	dir := t.TempDir()
	r := &testRegistry{t: t, addr: freeAddr(t), dir: dir, config: filepath.Join(dir, "config.yml"), log: filepath.Join(dir, "registry.log")}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
  secret: wasmorch-e2e
`, filepath.Join(dir, "storage"), r.addr)
	if o.tls {
		r.ca = filepath.Join(dir, "ca.pem")
		cert, key := writeTLS(t, dir, r.ca)
		cfg += fmt.Sprintf("  tls:\n    certificate: %s\n    key: %s\n", cert, key)
	}
	if o.auth {
		r.user, r.password = "ci", "s3cret-"+fmt.Sprint(time.Now().UnixNano())
		hash, err := bcrypt.GenerateFromPassword([]byte(r.password), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(htpasswd, []byte(r.user+":"+string(hash)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg += fmt.Sprintf("auth:\n  htpasswd:\n    realm: wasmorch-e2e\n    path: %s\n", htpasswd)
	}
	if err := os.WriteFile(r.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	r.start(bin)
	t.Cleanup(r.stop)
	return r
}

// start runs the registry with its config and waits until /v2/ answers
// (401 with auth).
func (r *testRegistry) start(bin string) {
	r.t.Helper()
	logFile, err := os.OpenFile(r.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		r.t.Fatal(err)
	}
	defer logFile.Close()
	r.cmd = exec.Command(bin, "serve", r.config)
	r.cmd.Stdout, r.cmd.Stderr = logFile, logFile
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(r.cmd, r.done)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: r.tlsConfig()}}
	url := r.scheme() + "://" + r.addr + "/v2/"
	eventually(r.t, "docker-registry answers on "+r.addr, func() (bool, string) {
		select {
		case <-r.done:
			out, _ := os.ReadFile(r.log)
			r.t.Fatalf("docker-registry exited:\n%s", out)
		default:
		}
		resp, err := client.Get(url)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized, resp.Status
	})
}

// stop ends the registry (its storage stays: restart serves it again).
func (r *testRegistry) stop() {
	if r.cmd == nil {
		return
	}
	select {
	case <-r.done:
	default:
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(stopGrace):
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	}
	r.cmd = nil
	if r.t.Failed() {
		out, _ := os.ReadFile(r.log)
		r.t.Logf("docker-registry on %s printed:\n%s", r.addr, out)
	}
}

func (r *testRegistry) restart() {
	r.t.Helper()
	r.start(registryBinary(r.t))
}

func (r *testRegistry) scheme() string {
	if r.ca == "" {
		return "http"
	}
	return "https"
}

func (r *testRegistry) tlsConfig() *tls.Config {
	if r.ca == "" {
		return nil
	}
	pem, err := os.ReadFile(r.ca)
	if err != nil {
		r.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &tls.Config{RootCAs: pool}
}

// dockerConfig writes a docker config.json with user:password for the
// registry and returns its directory, for DOCKER_CONFIG.
func (r *testRegistry) dockerConfig(user, password string) string {
	r.t.Helper()
	dir := r.t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, r.addr, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		r.t.Fatal(err)
	}
	return dir
}

// blobFile is where the registry keeps a blob's bytes.
func (r *testRegistry) blobFile(digest string) string {
	hex := strings.TrimPrefix(digest, "sha256:")
	return filepath.Join(r.dir, "storage", "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data")
}

// writeTLS writes a CA (to caPath) and a certificate for 127.0.0.1
// signed by it, returning the certificate's and the key's paths.
func writeTLS(t *testing.T, dir, caPath string) (string, string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "wasmorch e2e registry CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(path, typ string, der []byte) string {
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write(caPath, "CERTIFICATE", caDER)
	return write(filepath.Join(dir, "cert.pem"), "CERTIFICATE", der), write(filepath.Join(dir, "key.pem"), "EC PRIVATE KEY", keyDER)
}

// runIn runs the binary with stdin.
func runIn(t testing.TB, env []string, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Dir = repoRoot
	cmd.Env = env
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	if exitErr, ok := err.(*exec.ExitError); ok {
		r.code = exitErr.ExitCode()
	} else if err != nil {
		t.Fatalf("running wasmorch %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// withCustomSection is module with a custom section appended: a module
// that runs the same, with another digest.
func withCustomSection(t *testing.T, module, payload string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, module))
	if err != nil {
		t.Fatal(err)
	}
	const name = "wasmorch-e2e"
	body := append([]byte{byte(len(name))}, name...)
	body = append(body, payload...)
	if len(body) > 127 {
		t.Fatal("custom section too long for a one-byte LEB128 size")
	}
	b = append(b, 0, byte(len(body)))
	b = append(b, body...)
	path := filepath.Join(t.TempDir(), filepath.Base(module))
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// hangingRegistry is a listener that accepts connections and never
// answers, for as long as the test runs; it returns its address.
func hangingRegistry(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return lis.Addr().String()
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// pushOtherArtifact pushes to ref an OCI artifact that is neither a Wasm
// module nor an image (a Helm chart's media types), with
// go-containerregistry.
func pushOtherArtifact(t *testing.T, r *testRegistry, ref string) {
	t.Helper()
	content := static.NewLayer([]byte("not a module"), "application/vnd.cncf.helm.chart.content.v1.tar+gzip")
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, "application/vnd.cncf.helm.config.v1+json")
	img, err := mutate.Append(img, mutate.Addendum{Layer: content})
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	auth := &authn.Basic{Username: r.user, Password: r.password}
	transport := &http.Transport{TLSClientConfig: r.tlsConfig()}
	if err := remote.Write(parsed, img, remote.WithAuth(auth), remote.WithTransport(transport)); err != nil {
		t.Fatal(err)
	}
}
