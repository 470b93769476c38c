package api

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/events"
	"github.com/wasmorch/wasmorch/controlplane/secretstore"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/etcdtest"
)

// newTestServer is a member's API over a real embedded etcd: the store,
// a cache (not started: a test starts it when it wants one), blobs,
// events, and a CA, a member certificate and a keyring in a temporary
// data dir — what controlplane.New gives the API, without the listeners
// and the leader's loops. set changes the config before the API is made.
func newTestServer(t testing.TB, set func(*Config)) *Server {
	t.Helper()
	cli := etcdtest.Start(t)
	dir := t.TempDir()
	ca, _, err := auth.LoadOrCreateCA(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(auth.Identity{Role: auth.RoleMember, Name: "test"}, []string{"127.0.0.1"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kp, err := auth.NewKeypair(append(certPEM, ca.CertPEM...), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := secretstore.LoadKeyring(dir)
	if err != nil {
		t.Fatal(err)
	}
	stopping := make(chan struct{})
	cfg := Config{Name: "test", Store: store.New(cli), Cache: cache.New(cache.Config{Client: cli}), Blobs: blobs.New(cli),
		Events: events.New(cli, "test"), CA: ca, Identity: kp, Secrets: keys,
		HeartbeatInterval: 500 * time.Millisecond, NodeGrace: 2 * time.Second, Stopping: stopping}
	if set != nil {
		set(&cfg)
	}
	s := New(cfg)
	t.Cleanup(func() { close(stopping); s.Close() })
	etcdtest.Run(t, s.Start)
	return s
}
