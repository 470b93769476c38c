package secretbox

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func mustKey(t *testing.T) Key {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpenRoundTrip(t *testing.T) {
	k := mustKey(t)
	plain := []byte("password=hunter2")
	nonce, ct, err := Seal(k, plain, []byte("db"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, plain) || bytes.Contains(ct, []byte("hunter2")) {
		t.Fatalf("the ciphertext contains the plaintext")
	}
	got, err := Open(k, nonce, ct, []byte("db"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, plain) {
		t.Fatalf("Open = %q, want %q", got, plain)
	}
	// A fresh nonce every time: sealing twice never gives the same bytes.
	nonce2, ct2, err := Seal(k, plain, []byte("db"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(nonce, nonce2) || bytes.Equal(ct, ct2) {
		t.Fatalf("sealing twice gave the same nonce or ciphertext")
	}
}

func TestOpenRefusesWrongKeyContextOrAlteredBytes(t *testing.T) {
	k, other := mustKey(t), mustKey(t)
	nonce, ct, err := Seal(k, []byte("v"), []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	altered := bytes.Clone(ct)
	altered[0] ^= 1
	for name, open := range map[string]func() ([]byte, error){
		"wrong key":     func() ([]byte, error) { return Open(other, nonce, ct, []byte("a")) },
		"wrong context": func() ([]byte, error) { return Open(k, nonce, ct, []byte("b")) },
		"altered":       func() ([]byte, error) { return Open(k, nonce, altered, []byte("a")) },
		"short nonce":   func() ([]byte, error) { return Open(k, nonce[:4], ct, []byte("a")) },
	} {
		if _, err := open(); !errors.Is(err, ErrDecrypt) {
			t.Errorf("%s: err = %v, want ErrDecrypt", name, err)
		}
	}
}

// Rotation as the control plane does it: data keys wrapped under the
// member key; a secret re-sealed under a new data key opens with it, and
// the old data key still opens what was sealed before.
func TestRotationKeepsOldDataKeysReadable(t *testing.T) {
	member := mustKey(t)
	wrap := func(dk Key, id string) (n, w []byte) {
		n, w, err := Seal(member, dk[:], []byte(id))
		if err != nil {
			t.Fatal(err)
		}
		return n, w
	}
	unwrap := func(n, w []byte, id string) Key {
		raw, err := Open(member, n, w, []byte(id))
		if err != nil {
			t.Fatal(err)
		}
		k, err := KeyFromBytes(raw)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	dk1, dk2 := mustKey(t), mustKey(t)
	n1, w1 := wrap(dk1, "k1")
	n2, w2 := wrap(dk2, "k2")
	sn, sct, err := Seal(unwrap(n1, w1, "k1"), []byte("secret"), []byte("s"))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := Open(unwrap(n1, w1, "k1"), sn, sct, []byte("s"))
	if err != nil {
		t.Fatal(err)
	}
	rn, rct, err := Seal(unwrap(n2, w2, "k2"), plain, []byte("s"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := Open(dk2, rn, rct, []byte("s")); err != nil || string(got) != "secret" {
		t.Fatalf("re-sealed secret: %q, %v", got, err)
	}
	if _, err := Open(dk1, rn, rct, []byte("s")); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("the old data key opened a secret re-sealed under the new one: %v", err)
	}
	if got, err := Open(dk1, sn, sct, []byte("s")); err != nil || string(got) != "secret" {
		t.Fatalf("the old data key no longer opens what it sealed: %q, %v", got, err)
	}
	if _, err := Open(member, n2, w2, []byte("k1")); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("a wrapped data key opened under another ID: %v", err)
	}
}

func TestDigestIsKeyedAndOrderFree(t *testing.T) {
	k, other := mustKey(t), mustKey(t)
	a := map[string]string{"user": "u", "password": "p"}
	b := map[string]string{"password": "p", "user": "u"}
	if Digest(k, a) != Digest(k, b) {
		t.Fatalf("equal data, different digests")
	}
	if Digest(k, a) == Digest(other, a) {
		t.Fatalf("the digest does not depend on the key")
	}
	if Digest(k, map[string]string{"ab": "c"}) == Digest(k, map[string]string{"a": "bc"}) {
		t.Fatalf("keys and values run together")
	}
}

func TestLoadOrCreateKeyKeepsOneKeyPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "pki", "secrets.key")
	k1, created, err := LoadOrCreateKey(path)
	if err != nil || !created {
		t.Fatalf("first load: created=%v err=%v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	k2, created, err := LoadOrCreateKey(path)
	if err != nil || created || k1 != k2 {
		t.Fatalf("second load: created=%v err=%v same=%v", created, err, k1 == k2)
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(path); err == nil {
		t.Fatalf("a truncated key file was accepted")
	}
}
