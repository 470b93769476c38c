package auth

import (
	"strings"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

func TestDashboardTokensVerifyOnlyWhenSignedByTheCAAndUnexpired(t *testing.T) {
	ca, other := newTestCA(t), newTestCA(t)
	now := time.Now()
	admin := Identity{Role: RoleAdmin, Name: "admin"}
	good, err := ca.SignUIToken(UIToken{Identity: admin, Minter: "42", Issued: now, Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	got, err := VerifyUIToken(ca.Cert, good, now)
	if err != nil {
		t.Fatalf("a fresh token is refused: %v", err)
	}
	if got.Identity != admin || got.Minter != "42" || got.ID == "" || !got.Expires.Equal(now.Add(time.Hour).Truncate(time.Second)) {
		t.Errorf("the token says %+v", got)
	}
	foreign, err := other.SignUIToken(UIToken{Identity: admin, Issued: now, Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	long, err := ca.SignUIToken(UIToken{Identity: admin, Issued: now, Expires: now.Add(MaxUITokenTTL + time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	claims, sig, _ := strings.Cut(strings.TrimPrefix(good, UITokenPrefix), ".")
	forgedClaims := b64.EncodeToString([]byte(`{"id":"x","role":"admin","name":"admin","iat":0,"exp":9999999999}`))
	for _, tc := range []struct {
		name, token string
		at          time.Time
		want        string
	}{
		{"expired", good, now.Add(time.Hour + time.Second), "expired at"},
		{"another cluster's", foreign, now, "not signed by this cluster's CA"},
		{"claims changed under the signature", UITokenPrefix + forgedClaims + "." + sig, now, "not signed by this cluster's CA"},
		{"cut short", UITokenPrefix + claims, now, "malformed"},
		{"not a dashboard token", "wmt_abc.def.ghi", now, "not a dashboard token"},
		{"longer lived than any member mints", long, now, "lives longer than"},
	} {
		_, err := VerifyUIToken(ca.Cert, tc.token, tc.at)
		if !errdefs.IsUnauthenticated(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want Unauthenticated saying %q", tc.name, err, tc.want)
		}
	}
}
