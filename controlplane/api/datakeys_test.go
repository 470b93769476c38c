package api

import (
	"context"
	"slices"
	"testing"

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

// TestDataKeyPruningIsGuardedAgainstSecretWrites: a data key that a
// secret written after the pruning read uses is not deleted, and a
// secret sealed under a key that has been deleted is not written.
func TestDataKeyPruningIsGuardedAgainstSecretWrites(t *testing.T) {
	g := newGCServer(t, 0)
	s := g.s
	ctx := context.Background()
	if _, err := g.api.SetSecret(ctx, &v1.SetSecretRequest{Name: "a", Data: map[string]string{"K": "1"}}); err != nil {
		t.Fatal(err)
	}
	// A write that has sealed its secret under the current key, k1, and
	// has not written it yet.
	late := &v1.Secret{Name: "late"}
	if err := s.sealSecret(ctx, late, map[string]string{"K": "late"}); err != nil {
		t.Fatal(err)
	}
	k1 := late.GetKeyId()
	// k2 becomes current and "a" moves to it: k1 is unused.
	cur, err := s.store.Client.Get(ctx, currentSecretKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.newDataKey(ctx, cur.Kvs[0].ModRevision); err != nil {
		t.Fatal(err)
	}
	if _, err := g.api.SetSecret(ctx, &v1.SetSecretRequest{Name: "a", Data: map[string]string{"K": "2"}}); err != nil {
		t.Fatal(err)
	}
	plan, err := s.findUnusedDataKeys(ctx)
	if err != nil || !slices.Equal(plan.ids, []string{k1}) {
		t.Fatalf("unused data keys = %v, %v; want [%s]", plan, err, k1)
	}

	// The late write lands between the read and the delete.
	put, err := s.store.Secrets.PutOp("late", late)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := s.store.Client.Txn(ctx).If(s.dataKeyPresent(k1)).Then(put).Commit(); err != nil || !resp.Succeeded {
		t.Fatalf("writing the late secret: %v, %v", resp, err)
	}
	if done, err := s.deleteDataKeys(ctx, plan); err != nil || done {
		t.Fatalf("deleteDataKeys after a secret write = %v, %v; want not done", done, err)
	}
	if !slices.Contains(dataKeyIDs(t, s), k1) {
		t.Fatal("the data key of the late secret was deleted")
	}
	if _, err := s.openSecret(ctx, late); err != nil {
		t.Fatalf("the late secret does not open: %v", err)
	}

	// Once no secret uses k1 it goes, and a write sealed under it fails.
	if _, err := g.api.DeleteSecret(ctx, &v1.DeleteSecretRequest{Name: "late"}); err != nil {
		t.Fatal(err)
	}
	pruned, err := s.pruneDataKeys(ctx)
	if err != nil || !slices.Equal(pruned, []string{k1}) {
		t.Fatalf("pruneDataKeys = %v, %v; want [%s]", pruned, err, k1)
	}
	if resp, err := s.store.Client.Txn(ctx).If(s.dataKeyPresent(k1)).Then(put).Commit(); err != nil || resp.Succeeded {
		t.Fatalf("a secret sealed under a deleted data key was written: %v, %v", resp, err)
	}
	if _, err := s.store.Secrets.Get(ctx, "late"); !errdefs.IsNotFound(err) {
		t.Fatalf("late secret: %v; want not found", err)
	}

	// SetSecret holds to the same rule: made to seal under k1 (the
	// current-key pointer put back to it, as a set that read it before
	// the rotation saw it; this member still has k1 unwrapped), it fails
	// rather than store a secret nothing can open.
	if _, err := s.store.Client.Put(ctx, currentSecretKey, k1); err != nil {
		t.Fatal(err)
	}
	if _, err := g.api.SetSecret(ctx, &v1.SetSecretRequest{Name: "b", Data: map[string]string{"K": "b"}}); !errdefs.IsConflict(err) {
		t.Fatalf("SetSecret sealing under a deleted data key: %v; want a conflict", err)
	}
	if _, err := s.store.Secrets.Get(ctx, "b"); !errdefs.IsNotFound(err) {
		t.Fatalf("secret b: %v; want not found", err)
	}
}
