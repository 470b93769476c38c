package secretstore

import (
	"context"
	"fmt"
	"sort"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Pruning the secrets' data keys. After a rotation has re-encrypted every
// secret under the new key, the old keys would only pile up; each is
// deleted once no secret is sealed under it, unless it is current. The
// deletion is a transaction that holds only if no secret and not the
// current-key pointer changed since they were read, and every write of a
// secret in turn requires its data key to exist (KeyPresent): a
// secret sealed under a key just before it is deleted fails to be written
// (and is sealed again under the current key) rather than being stored
// where nothing can open it.

// KeyPresent holds while the data key id exists.
func (s *Store) KeyPresent(id string) clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(s.st.SecretKeys.Key(id)), ">", 0)
}

// reseal replaces cur with next (sealed again) if cur is unchanged
// and next's data key still exists; otherwise ErrConflict.
func (s *Store) reseal(ctx context.Context, cur store.Versioned[*v1.Secret], next *v1.Secret) error {
	put, err := s.st.Secrets.PutOp(cur.Name, next)
	if err != nil {
		return err
	}
	resp, err := s.st.Client.Txn(ctx).
		If(s.st.Secrets.Unchanged(cur.Name, cur.ModRevision), s.KeyPresent(next.GetKeyId())).
		Then(put).Commit()
	if err != nil {
		return errdefs.Unavailablef("write secret %q: %v", cur.Name, err)
	}
	if !resp.Succeeded {
		return errdefs.Conflictf("secret %q or its data key changed meanwhile", cur.Name)
	}
	return nil
}

// unusedDataKeys is a plan to delete the data keys no secret uses, read
// at rev with the current-key pointer at currentModRev.
type unusedDataKeys struct {
	ids           []string
	rev           int64
	currentModRev int64
}

// findUnusedDataKeys reads the secrets, the data keys and the current key
// at one revision.
func (s *Store) findUnusedDataKeys(ctx context.Context) (*unusedDataKeys, error) {
	resp, err := s.st.Client.Txn(ctx).Then(
		clientv3.OpGet(store.SecretsPrefix, clientv3.WithPrefix()),
		clientv3.OpGet(store.SecretKeysPrefix, clientv3.WithPrefix(), clientv3.WithKeysOnly()),
		clientv3.OpGet(currentSecretKey),
	).Commit()
	if err != nil {
		return nil, errdefs.Unavailablef("read the secrets and their data keys: %v", err)
	}
	plan := &unusedDataKeys{rev: resp.Header.GetRevision()}
	current := resp.Responses[2].GetResponseRange().GetKvs()
	if len(current) == 0 {
		return plan, nil // no key was ever made current: leave everything
	}
	plan.currentModRev = current[0].ModRevision
	used := map[string]bool{string(current[0].Value): true}
	for _, kv := range resp.Responses[0].GetResponseRange().GetKvs() {
		sec, err := s.st.Secrets.Decode(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("secret record %s: %w", kv.Key, err) // it might use any key
		}
		used[sec.GetKeyId()] = true
	}
	for _, kv := range resp.Responses[1].GetResponseRange().GetKvs() {
		if id := s.st.SecretKeys.NameOf(kv.Key); !used[id] {
			plan.ids = append(plan.ids, id)
		}
	}
	sort.Strings(plan.ids)
	if len(plan.ids) > store.MaxOpsPerTxn/2 {
		plan.ids = plan.ids[:store.MaxOpsPerTxn/2] // the rest at the next rotation
	}
	return plan, nil
}

// deleteDataKeys carries plan out if no secret and not the current key
// changed since it was read, and reports whether it did.
func (s *Store) deleteDataKeys(ctx context.Context, plan *unusedDataKeys) (bool, error) {
	if len(plan.ids) == 0 {
		return true, nil
	}
	cmps := []clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(store.SecretsPrefix), "<", plan.rev+1).WithPrefix(),
		clientv3.Compare(clientv3.ModRevision(currentSecretKey), "=", plan.currentModRev),
	}
	ops := make([]clientv3.Op, 0, len(plan.ids))
	for _, id := range plan.ids {
		ops = append(ops, s.st.SecretKeys.DeleteOp(id))
	}
	resp, err := s.st.Client.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return false, errdefs.Unavailablef("delete unused secret data keys: %v", err)
	}
	return resp.Succeeded, nil
}

// Prune deletes the data keys that no secret uses and that are
// not current, and returns their IDs.
func (s *Store) Prune(ctx context.Context) ([]string, error) {
	for range 5 {
		plan, err := s.findUnusedDataKeys(ctx)
		if err != nil {
			return nil, err
		}
		done, err := s.deleteDataKeys(ctx, plan)
		if err != nil {
			return nil, err
		}
		if done {
			return plan.ids, nil
		}
	}
	return nil, errdefs.Conflictf("secrets kept changing while looking for unused data keys")
}
