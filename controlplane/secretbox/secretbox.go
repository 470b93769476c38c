// Package secretbox seals secrets for storage in etcd: AES-256-GCM from the
// standard library, with envelope encryption. A member key (32 random bytes
// in the member's data dir, the same on every member, handed over like the
// CA key) wraps data keys; data keys, stored wrapped in etcd under an ID,
// seal the secrets. Rotating the data key re-encrypts secrets without
// touching the members' files.
package secretbox

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
)

// KeySize is the size of every key: AES-256.
const KeySize = 32

// ErrDecrypt is returned when a ciphertext does not open under the key
// given: the wrong key, or altered bytes.
var ErrDecrypt = errors.New("decryption failed: wrong key or altered data")

// Key is a 256-bit AES key.
type Key [KeySize]byte

// NewKey returns a random key.
func NewKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return Key{}, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

// KeyFromBytes checks b's length and copies it into a Key.
func KeyFromBytes(b []byte) (Key, error) {
	var k Key
	if len(b) != KeySize {
		return k, fmt.Errorf("a secrets key is %d bytes, not %d", KeySize, len(b))
	}
	copy(k[:], b)
	return k, nil
}

// LoadOrCreateKey reads the key file at path, or creates one (mode 0600)
// when none exists; created says which.
func LoadOrCreateKey(path string) (k Key, created bool, err error) {
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := KeyFromBytes(b)
		if err != nil {
			return Key{}, false, fmt.Errorf("%s: %w", path, err)
		}
		return k, false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return Key{}, false, err
	}
	if k, err = NewKey(); err != nil {
		return Key{}, false, err
	}
	return k, true, SaveKey(path, k)
}

// SaveKey writes k to path (mode 0600) atomically, creating the directory.
func SaveKey(path string, k Key) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, k[:], 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Seal encrypts plaintext under k with a fresh random nonce; aad binds the
// ciphertext to its context (a secret's name), so that it cannot be moved.
func Seal(k Key, plaintext, aad []byte) (nonce, ciphertext []byte, err error) {
	aead, err := newAEAD(k)
	if err != nil {
		return nil, nil, err
	}
	nonce = make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, fmt.Errorf("generate nonce: %w", err)
	}
	return nonce, aead.Seal(nil, nonce, plaintext, aad), nil
}

// Open decrypts what Seal returned; anything but the same key, nonce and
// aad fails with ErrDecrypt.
func Open(k Key, nonce, ciphertext, aad []byte) ([]byte, error) {
	aead, err := newAEAD(k)
	if err != nil {
		return nil, err
	}
	if len(nonce) != aead.NonceSize() {
		return nil, ErrDecrypt
	}
	out, err := aead.Open(nil, nonce, ciphertext, aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return out, nil
}

func newAEAD(k Key) (cipher.AEAD, error) {
	block, err := aes.NewCipher(k[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Digest is a keyed hash (HMAC-SHA256 under a key derived from k) of
// data: equal data gives equal digests under one member key, and the
// digest reveals nothing of a guessable value to whoever lacks the key.
func Digest(k Key, data map[string]string) string {
	dk := hmac.New(sha256.New, k[:])
	dk.Write([]byte("wasmorch secret digest v1"))
	h := hmac.New(sha256.New, dk.Sum(nil))
	h.Write(Canonical(data))
	return "hmac-sha256:" + hex.EncodeToString(h.Sum(nil))[:32]
}

// Canonical encodes data unambiguously: sorted keys, each key and value
// length-prefixed.
func Canonical(data map[string]string) []byte {
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		b.Write(binary.AppendUvarint(nil, uint64(len(k))))
		b.WriteString(k)
		b.Write(binary.AppendUvarint(nil, uint64(len(data[k]))))
		b.WriteString(data[k])
	}
	return b.Bytes()
}
