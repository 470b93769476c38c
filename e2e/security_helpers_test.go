package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/wasmorch/wasmorch/controlplane/auth"
)

// joinToken creates a join token with `wasmorch token create` on the
// server at api (extra: --role server, --ttl ...).
func joinToken(tb testing.TB, env []string, api string, extra ...string) string {
	tb.Helper()
	r := run(tb, env, append([]string{"token", "create", "--server", api}, extra...)...)
	if r.code != 0 {
		tb.Fatalf("%s", r)
	}
	return strings.TrimSpace(r.stdout)
}

// joinToken is the cluster's agent join token, created once.
func (m *multi) joinToken() string {
	m.t.Helper()
	if m.token == "" {
		m.token = joinToken(m.t, m.env, m.api)
	}
	return m.token
}

// adminCreds are the transport credentials of the admin credential a
// member wrote into its data dir, for tests that call the API in-process.
func adminCreds(tb testing.TB, dataDir string) credentials.TransportCredentials {
	tb.Helper()
	path := filepath.Join(dataDir, "admin.yaml")
	var last error
	for range maxPolls {
		c, err := auth.ReadCredential(path)
		if err == nil {
			cfg, err := c.ClientTLS()
			if err != nil {
				tb.Fatal(err)
			}
			return credentials.NewTLS(cfg)
		}
		last = err
		time.Sleep(pollInterval)
	}
	tb.Fatalf("no admin credential in %s: %v", dataDir, last)
	return nil
}

// joinTokenWhenUp waits until the server at api answers, then creates a
// join token.
func joinTokenWhenUp(tb testing.TB, env []string, api string) string {
	tb.Helper()
	var last result
	for range maxPolls {
		if last = run(tb, env, "token", "create", "--server", api); last.code == 0 {
			return strings.TrimSpace(last.stdout)
		}
		time.Sleep(pollInterval)
	}
	tb.Fatalf("no join token from %s: %s", api, last)
	return ""
}
