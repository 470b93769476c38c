package auth

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

// Dashboard tokens: the credential a browser holds for the web dashboard
// (/ui), which cannot present a client certificate. An admin mints one
// with the CLI (`wasmorch ui token`); the member signs it with the
// cluster CA's key, so that every member can check it without a lookup,
// and whoever holds it acts as the admin who minted it until it expires.
// It names the certificate of that admin, so that revoking the
// certificate ends its tokens too.
//
// The form is wmui_<claims>.<signature>, both base64url without padding:
// claims is JSON, signature the CA's ECDSA signature (ASN.1) over
// uiTokenContext followed by the claims' bytes. The context keeps a
// token's signature from ever standing for anything else the CA signs.
const (
	UITokenPrefix     = "wmui_"
	DefaultUITokenTTL = 12 * time.Hour
	// MaxUITokenTTL bounds how long a dashboard token lives: a browser
	// keeps it in a cookie, so it is short-lived by design.
	MaxUITokenTTL  = 24 * time.Hour
	uiTokenContext = "wasmorch dashboard token v1\n"
)

// UIToken is what a dashboard token says.
type UIToken struct {
	ID       string    // random, to tell tokens apart in logs
	Identity Identity  // who its holder acts as: the admin who minted it
	Minter   string    // the serial of the certificate it was minted with (Serial)
	Issued   time.Time // when it was minted
	Expires  time.Time // when it stops being accepted
}

// uiClaims is UIToken as signed.
type uiClaims struct {
	ID      string `json:"id"`
	Role    Role   `json:"role"`
	Name    string `json:"name"`
	Minter  string `json:"minter"`
	Issued  int64  `json:"iat"`
	Expires int64  `json:"exp"`
}

var b64 = base64.RawURLEncoding

// IsUIToken says whether s has the form of a dashboard token (not that it
// is valid).
func IsUIToken(s string) bool { return strings.HasPrefix(s, UITokenPrefix) }

// SignUIToken signs t (ID is filled in when empty) and returns the token.
func (ca *CA) SignUIToken(t UIToken) (string, error) {
	if t.ID == "" {
		id, err := randomString(10)
		if err != nil {
			return "", err
		}
		t.ID = id
	}
	if err := t.Identity.validate(); err != nil {
		return "", err
	}
	claims, err := json.Marshal(uiClaims{ID: t.ID, Role: t.Identity.Role, Name: t.Identity.Name, Minter: t.Minter,
		Issued: t.Issued.Unix(), Expires: t.Expires.Unix()})
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(append([]byte(uiTokenContext), claims...))
	sig, err := ecdsa.SignASN1(rand.Reader, ca.key, sum[:])
	if err != nil {
		return "", err
	}
	return UITokenPrefix + b64.EncodeToString(claims) + "." + b64.EncodeToString(sig), nil
}

// VerifyUIToken checks that raw was signed by the CA whose certificate is
// caCert and has not expired at now, and returns what it says. Every
// refusal is Unauthenticated and says what to do.
func VerifyUIToken(caCert *x509.Certificate, raw string, now time.Time) (UIToken, error) {
	const mint = "mint a new one with 'wasmorch ui token'"
	body, ok := strings.CutPrefix(strings.TrimSpace(raw), UITokenPrefix)
	if !ok {
		return UIToken{}, errdefs.Unauthenticatedf("not a dashboard token (they start with %s): %s", UITokenPrefix, mint)
	}
	claimsB64, sigB64, ok := strings.Cut(body, ".")
	claims, err1 := b64.DecodeString(claimsB64)
	sig, err2 := b64.DecodeString(sigB64)
	if !ok || err1 != nil || err2 != nil {
		return UIToken{}, errdefs.Unauthenticatedf("the dashboard token is malformed (cut short when copied?): %s", mint)
	}
	pub, ok := caCert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return UIToken{}, errdefs.Unauthenticatedf("the cluster CA's key is not ECDSA: it cannot check dashboard tokens")
	}
	sum := sha256.Sum256(append([]byte(uiTokenContext), claims...))
	if !ecdsa.VerifyASN1(pub, sum[:], sig) {
		return UIToken{}, errdefs.Unauthenticatedf("the dashboard token was not signed by this cluster's CA: %s", mint)
	}
	var c uiClaims
	if err := json.Unmarshal(claims, &c); err != nil {
		return UIToken{}, errdefs.Unauthenticatedf("the dashboard token's claims do not decode: %v", err)
	}
	t := UIToken{ID: c.ID, Identity: Identity{Role: c.Role, Name: c.Name}, Minter: c.Minter,
		Issued: time.Unix(c.Issued, 0), Expires: time.Unix(c.Expires, 0)}
	if !now.Before(t.Expires) {
		return UIToken{}, errdefs.Unauthenticatedf("the dashboard token expired at %s: %s", t.Expires.UTC().Format(time.RFC3339), mint)
	}
	if t.Expires.Sub(t.Issued) > MaxUITokenTTL {
		return UIToken{}, errdefs.Unauthenticatedf("the dashboard token lives longer than %s, which no member mints: %s", MaxUITokenTTL, mint)
	}
	if err := t.Identity.validate(); err != nil {
		return UIToken{}, errdefs.Unauthenticatedf("the dashboard token names no valid identity: %v", err)
	}
	return t, nil
}
