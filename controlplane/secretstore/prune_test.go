package secretstore

import (
	"context"
	"maps"
	"slices"
	"testing"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/etcdtest"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// newTestStore is the secrets at rest of a fresh etcd, with a member key
// in a temporary data dir.
func newTestStore(t *testing.T) *Store {
	t.Helper()
	keys, err := LoadKeyring(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return New(store.New(etcdtest.Start(t)), keys)
}

// dataKeyIDs lists the data keys stored in etcd.
func dataKeyIDs(t *testing.T, s *Store) []string {
	t.Helper()
	recs, _, err := s.st.SecretKeys.List(context.Background())
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

// write stores sec as the API does: only while its data key exists.
func write(t *testing.T, s *Store, sec *v1.Secret) bool {
	t.Helper()
	put, err := s.st.Secrets.PutOp(sec.GetName(), sec)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.st.Client.Txn(context.Background()).If(s.KeyPresent(sec.GetKeyId())).Then(put).Commit()
	if err != nil {
		t.Fatal(err)
	}
	return resp.Succeeded
}

// sealed is a secret named name sealed under the current data key.
func sealed(t *testing.T, s *Store, name string, data map[string]string) *v1.Secret {
	t.Helper()
	sec := &v1.Secret{Name: name}
	if err := s.Seal(context.Background(), sec, data); err != nil {
		t.Fatal(err)
	}
	return sec
}

// TestDataKeyPruningIsGuardedAgainstSecretWrites: a data key that a
// secret written after the pruning read uses is not deleted, and a
// secret sealed under a key that has been deleted is not written.
func TestDataKeyPruningIsGuardedAgainstSecretWrites(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	if !write(t, s, sealed(t, s, "a", map[string]string{"K": "1"})) {
		t.Fatal("secret a was not written")
	}
	// A write that has sealed its secret under the current key, k1, and
	// has not written it yet.
	late := sealed(t, s, "late", map[string]string{"K": "late"})
	k1 := late.GetKeyId()
	// k2 becomes current and "a" moves to it: k1 is unused.
	cur, err := s.st.Client.Get(ctx, store.CurrentSecretKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.newDataKey(ctx, cur.Kvs[0].ModRevision); err != nil {
		t.Fatal(err)
	}
	if !write(t, s, sealed(t, s, "a", map[string]string{"K": "2"})) {
		t.Fatal("secret a was not written again")
	}
	plan, err := s.findUnusedDataKeys(ctx)
	if err != nil || !slices.Equal(plan.ids, []string{k1}) {
		t.Fatalf("unused data keys = %v, %v; want [%s]", plan, err, k1)
	}

	// The late write lands between the read and the delete.
	if !write(t, s, late) {
		t.Fatal("the late secret was not written while its data key exists")
	}
	if done, err := s.deleteDataKeys(ctx, plan); err != nil || done {
		t.Fatalf("deleteDataKeys after a secret write = %v, %v; want not done", done, err)
	}
	if !slices.Contains(dataKeyIDs(t, s), k1) {
		t.Fatal("the data key of the late secret was deleted")
	}
	if _, err := s.Open(ctx, late); err != nil {
		t.Fatalf("the late secret does not open: %v", err)
	}

	// Once no secret uses k1 it goes, and a write sealed under it fails.
	if _, err := s.st.Client.Delete(ctx, s.st.Secrets.Key("late")); err != nil {
		t.Fatal(err)
	}
	pruned, err := s.Prune(ctx)
	if err != nil || !slices.Equal(pruned, []string{k1}) {
		t.Fatalf("Prune = %v, %v; want [%s]", pruned, err, k1)
	}
	if write(t, s, late) {
		t.Fatal("a secret sealed under a deleted data key was written")
	}
	if _, err := s.st.Secrets.Get(ctx, "late"); !errdefs.IsNotFound(err) {
		t.Fatalf("late secret: %v; want not found", err)
	}
}

// TestRotateSealsEverySecretAgain: after a rotation every secret is sealed
// under the new key and opens to its data.
func TestRotateSealsEverySecretAgain(t *testing.T) {
	s := newTestStore(t)
	ctx := context.Background()
	data := map[string]map[string]string{"a": {"K": "1"}, "b": {"K": "2", "L": "3"}}
	for name, d := range data {
		if !write(t, s, sealed(t, s, name, d)) {
			t.Fatalf("secret %s was not written", name)
		}
	}
	id, n, err := s.Rotate(ctx)
	if err != nil || n != 2 {
		t.Fatalf("Rotate = %s, %d, %v; want 2 secrets sealed again", id, n, err)
	}
	for name, d := range data {
		cur, err := s.st.Secrets.Get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Value.GetKeyId() != id {
			t.Errorf("secret %s is sealed under %s after rotating to %s", name, cur.Value.GetKeyId(), id)
		}
		got, err := s.Open(ctx, cur.Value)
		if err != nil || !maps.Equal(got, d) {
			t.Errorf("secret %s opens to %v, %v; want %v", name, got, err, d)
		}
	}
}
