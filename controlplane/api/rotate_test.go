package api

import (
	"context"
	"slices"
	"testing"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// dataKeyIDs lists the data keys stored in etcd.
func dataKeyIDs(t *testing.T, s *Server) []string {
	t.Helper()
	recs, _, err := s.store.SecretKeys.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.Name)
	}
	slices.Sort(ids)
	return ids
}

// TestDataKeyRotationDeletesKeysNoSecretUses: after a rotation only the
// new key is left, and every secret still opens.
func TestDataKeyRotationDeletesKeysNoSecretUses(t *testing.T) {
	g := newGCServer(t, 0)
	ctx := context.Background()
	data := map[string]map[string]string{"a": {"K": "1"}, "b": {"K": "2", "L": "3"}}
	for name, d := range data {
		if _, err := g.api.SetSecret(ctx, &v1.SetSecretRequest{Name: name, Data: d}); err != nil {
			t.Fatal(err)
		}
	}
	first := dataKeyIDs(t, g.s)
	for range 2 {
		rot, err := g.api.RotateSecretKey(ctx, &v1.RotateSecretKeyRequest{})
		if err != nil || rot.GetSecrets() != 2 {
			t.Fatalf("RotateSecretKey = %v, %v; want 2 secrets re-encrypted", rot, err)
		}
		if ids := dataKeyIDs(t, g.s); !slices.Equal(ids, []string{rot.GetKeyId()}) {
			t.Fatalf("data keys after rotating to %s: %v (before the rotations: %v)", rot.GetKeyId(), ids, first)
		}
	}
	for name, d := range data {
		resp, err := g.api.SetSecret(ctx, &v1.SetSecretRequest{Name: name, Data: d})
		if err != nil || resp.GetChanged() {
			t.Fatalf("setting secret %s to its data again: %v, %v; want it unchanged (it opens)", name, resp, err)
		}
	}
}

// TestSetSecretRefusesADeletedDataKey: a set made to seal under a data key
// that a rotation has deleted (the current-key pointer put back to it, as
// a set that read it before the rotation saw it; this member still has
// the key unwrapped) fails rather than store a secret nothing can open.
func TestSetSecretRefusesADeletedDataKey(t *testing.T) {
	g := newGCServer(t, 0)
	s := g.s
	ctx := context.Background()
	if _, err := g.api.SetSecret(ctx, &v1.SetSecretRequest{Name: "a", Data: map[string]string{"K": "1"}}); err != nil {
		t.Fatal(err)
	}
	a, err := s.store.Secrets.Get(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	k1 := a.Value.GetKeyId()
	if _, err := g.api.RotateSecretKey(ctx, &v1.RotateSecretKeyRequest{}); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(dataKeyIDs(t, s), k1) {
		t.Fatalf("data key %s is still stored after the rotation", k1)
	}
	if _, err := s.store.Client.Put(ctx, store.CurrentSecretKey, k1); err != nil {
		t.Fatal(err)
	}
	if _, err := g.api.SetSecret(ctx, &v1.SetSecretRequest{Name: "b", Data: map[string]string{"K": "b"}}); !errdefs.IsConflict(err) {
		t.Fatalf("SetSecret sealing under a deleted data key: %v; want a conflict", err)
	}
	if _, err := s.store.Secrets.Get(ctx, "b"); !errdefs.IsNotFound(err) {
		t.Fatalf("secret b: %v; want not found", err)
	}
}
