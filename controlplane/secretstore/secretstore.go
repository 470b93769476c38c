// Package secretstore keeps secrets at rest: the member key each member
// holds on disk, the data keys it wraps in etcd, sealing and opening
// secrets under them, rotating to a new data key and deleting the keys
// no secret uses.
package secretstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/secretbox"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Secrets at rest (docs/manifests.md, "Secrets"): every member holds the
// same member key in <data-dir>/pki/secrets.key, created with the cluster
// and handed to joining members with the CA key. It wraps the data keys
// under /wasmorch/secretkeys/<id>; the current one, named by
// currentSecretKey, seals new secrets. An old data key stays (wrapped)
// while a secret is sealed under it; a rotation, once it has re-encrypted
// every secret, deletes the ones no secret uses (prune.go).
const (
	secretsKeyFile   = "secrets.key"
	currentSecretKey = store.CurrentSecretKey
)

// secretsKeyPath is the member key's file, beside the member's CA and
// certificate in <data-dir>/pki.
func secretsKeyPath(dataDir string) string {
	return filepath.Join(dataDir, "pki", secretsKeyFile)
}

// Store seals and opens secrets under the data keys in etcd.
type Store struct {
	st   *store.Store
	keys *Keyring
}

// New is the secrets at rest of the cluster st, opened with keys.
func New(st *store.Store, keys *Keyring) *Store { return &Store{st: st, keys: keys} }

// Keyring is a member's member key and the data keys it has unwrapped.
type Keyring struct {
	member secretbox.Key
	path   string

	mu   sync.Mutex
	data map[string]secretbox.Key
}

// LoadKeyring loads the member key kept in dataDir (creating it in a new
// cluster).
func LoadKeyring(dataDir string) (*Keyring, error) {
	path := secretsKeyPath(dataDir)
	k, _, err := secretbox.LoadOrCreateKey(path)
	if err != nil {
		return nil, fmt.Errorf("secrets key: %w", err)
	}
	return &Keyring{member: k, path: path, data: map[string]secretbox.Key{}}, nil
}

// AdoptBootstrapSecretsKey gives every member of a statically bootstrapped
// cluster the same member key, as adoptBootstrapCA does for the CA (and
// with the same caveat: the key then stays in etcd; see docs/ha.md).
func AdoptBootstrapSecretsKey(ctx context.Context, cli *clientv3.Client, dataDir string) error {
	mine, err := secretbox.NewKey()
	if err != nil {
		return err
	}
	const key = store.BootstrapSecretsKey
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(mine[:]))).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return fmt.Errorf("share the secrets key through etcd: %w", err)
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 {
			return errors.New("the secrets key in etcd is missing")
		}
		if mine, err = secretbox.KeyFromBytes(kvs[0].Value); err != nil {
			return err
		}
	}
	return secretbox.SaveKey(secretsKeyPath(dataDir), mine)
}

func dataKeyAAD(id string) []byte  { return []byte("wasmorch secret key " + id) }
func secretAAD(name string) []byte { return []byte("wasmorch secret " + name) }

// dataKey returns the data key id, unwrapped.
func (s *Store) dataKey(ctx context.Context, id string) (secretbox.Key, error) {
	kr := s.keys
	kr.mu.Lock()
	k, ok := kr.data[id]
	kr.mu.Unlock()
	if ok {
		return k, nil
	}
	rec, err := s.st.SecretKeys.Get(ctx, id)
	if err != nil {
		return secretbox.Key{}, err
	}
	raw, err := secretbox.Open(kr.member, rec.Value.GetNonce(), rec.Value.GetWrapped(), dataKeyAAD(id))
	if err != nil {
		return secretbox.Key{}, errdefs.Preconditionf("secret data key %s does not open with this member's secrets key (%s): the member's key is not the cluster's; copy it from another member", id, kr.path)
	}
	if k, err = secretbox.KeyFromBytes(raw); err != nil {
		return secretbox.Key{}, err
	}
	kr.mu.Lock()
	kr.data[id] = k
	kr.mu.Unlock()
	return k, nil
}

// currentDataKey returns the data key that seals new secrets, creating the
// first one when there is none.
func (s *Store) currentDataKey(ctx context.Context) (string, secretbox.Key, error) {
	resp, err := s.st.Client.Get(ctx, currentSecretKey)
	if err != nil {
		return "", secretbox.Key{}, errdefs.Unavailablef("read the current secret key: %v", err)
	}
	if len(resp.Kvs) > 0 {
		id := string(resp.Kvs[0].Value)
		k, err := s.dataKey(ctx, id)
		return id, k, err
	}
	id, err := s.newDataKey(ctx, 0)
	if errdefs.IsConflict(err) {
		return s.currentDataKey(ctx) // another member made the first one
	}
	if err != nil {
		return "", secretbox.Key{}, err
	}
	k, err := s.dataKey(ctx, id)
	return id, k, err
}

// newDataKey creates a data key and makes it current, if the current
// pointer is still at modRev (0: absent); otherwise ErrConflict.
func (s *Store) newDataKey(ctx context.Context, modRev int64) (string, error) {
	k, err := secretbox.NewKey()
	if err != nil {
		return "", err
	}
	var suffix [4]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return "", err
	}
	id := fmt.Sprintf("k%d-%s", time.Now().Unix(), hex.EncodeToString(suffix[:]))
	nonce, wrapped, err := secretbox.Seal(s.keys.member, k[:], dataKeyAAD(id))
	if err != nil {
		return "", err
	}
	put, err := s.st.SecretKeys.PutOp(id, &v1.SecretKey{Id: id, Nonce: nonce, Wrapped: wrapped, CreatedUnixNano: time.Now().UnixNano()})
	if err != nil {
		return "", err
	}
	guard := clientv3.Compare(clientv3.ModRevision(currentSecretKey), "=", modRev)
	resp, err := s.st.Client.Txn(ctx).If(guard).Then(put, clientv3.OpPut(currentSecretKey, id)).Commit()
	if err != nil {
		return "", errdefs.Unavailablef("store a new secret key: %v", err)
	}
	if !resp.Succeeded {
		return "", errdefs.Conflictf("the current secret key changed meanwhile; try again")
	}
	return id, nil
}

// Seal fills sec's sealed fields (keys, digest, key ID, nonce,
// ciphertext) from data under the current data key.
func (s *Store) Seal(ctx context.Context, sec *v1.Secret, data map[string]string) error {
	id, k, err := s.currentDataKey(ctx)
	if err != nil {
		return err
	}
	plain, err := proto.MarshalOptions{Deterministic: true}.Marshal(&v1.SecretData{Data: data})
	if err != nil {
		return err
	}
	nonce, ct, err := secretbox.Seal(k, plain, secretAAD(sec.GetName()))
	if err != nil {
		return err
	}
	sec.Keys = slices.Sorted(maps.Keys(data))
	sec.Digest = secretbox.Digest(s.keys.member, data)
	sec.KeyId, sec.Nonce, sec.Ciphertext = id, nonce, ct
	return nil
}

// Open decrypts a stored secret's data.
func (s *Store) Open(ctx context.Context, sec *v1.Secret) (map[string]string, error) {
	k, err := s.dataKey(ctx, sec.GetKeyId())
	if err != nil {
		return nil, err
	}
	plain, err := secretbox.Open(k, sec.GetNonce(), sec.GetCiphertext(), secretAAD(sec.GetName()))
	if err != nil {
		return nil, errdefs.Preconditionf("secret %q does not decrypt under key %s: %v", sec.GetName(), sec.GetKeyId(), err)
	}
	var d v1.SecretData
	if err := proto.Unmarshal(plain, &d); err != nil {
		return nil, fmt.Errorf("secret %q: decode: %w", sec.GetName(), err)
	}
	if d.Data == nil {
		d.Data = map[string]string{}
	}
	return d.Data, nil
}

// MemberKey is the member key, which a joining member receives with the
// CA: secrets sealed by any member open on every member.
func (kr *Keyring) MemberKey() []byte { return kr.member[:] }

// Rotate makes a new data key current and re-encrypts every secret under
// it; it returns the key's ID and how many secrets it sealed again. The
// keys left unused are deleted by Prune.
func (s *Store) Rotate(ctx context.Context) (string, int32, error) {
	var id string
	for attempt := 0; ; attempt++ {
		resp, err := s.st.Client.Get(ctx, currentSecretKey)
		if err != nil {
			return "", 0, errdefs.Unavailablef("read the current secret key: %v", err)
		}
		var rev int64
		if len(resp.Kvs) > 0 {
			rev = resp.Kvs[0].ModRevision
		}
		id, err = s.newDataKey(ctx, rev)
		if errdefs.IsConflict(err) && attempt < 5 {
			continue
		}
		if err != nil {
			return "", 0, err
		}
		break
	}
	var n int32
	secrets, _, err := s.st.Secrets.List(ctx)
	if err != nil {
		return "", 0, err
	}
	for _, cur := range secrets {
		for attempt := 0; ; attempt++ {
			if cur.Value.GetKeyId() == id {
				break // sealed under the new key by a set meanwhile
			}
			data, err := s.Open(ctx, cur.Value)
			if err != nil {
				return "", 0, err
			}
			next := proto.Clone(cur.Value).(*v1.Secret)
			if err := s.Seal(ctx, next, data); err != nil {
				return "", 0, err
			}
			err = s.reseal(ctx, cur, next)
			if err == nil {
				n++
				break
			}
			if !errdefs.IsConflict(err) || attempt >= 5 {
				return "", 0, err
			}
			if cur, err = s.st.Secrets.Get(ctx, cur.Name); errdefs.IsNotFound(err) {
				break
			} else if err != nil {
				return "", 0, err
			}
		}
	}
	return id, n, nil
}

// HasSecretsKey says whether the data dir holds a secrets key already.
func HasSecretsKey(dataDir string) bool {
	_, err := os.Stat(secretsKeyPath(dataDir))
	return err == nil
}

// SaveReceivedSecretsKey keeps the secrets key a joining member received
// with the CA. A member answering without one (an older version) leaves
// this member to create its own.
func SaveReceivedSecretsKey(dataDir string, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	k, err := secretbox.KeyFromBytes(b)
	if err != nil {
		return err
	}
	return secretbox.SaveKey(secretsKeyPath(dataDir), k)
}
