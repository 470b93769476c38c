package registry

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

func TestSecretNameIsAValidSecretName(t *testing.T) {
	for host, want := range map[string]string{
		"127.0.0.1:5000":        "registry-127-0-0-1-5000",
		"Registry.Example.com":  "registry-registry-example-com",
		"[::1]:5000":            "registry----1--5000",
		strings.Repeat("a", 80): "registry-" + strings.Repeat("a", 54),
	} {
		if got := SecretName(host); got != want {
			t.Errorf("SecretName(%q) = %q, want %q", host, got, want)
		}
	}
}

func TestSettingsRoundTripAndRefuseAnotherHost(t *testing.T) {
	s := Settings{Username: "ci", Password: "pw", CA: []byte("PEM"), PlainHTTP: true}
	got, err := FromData("reg:5000", s.Data("reg:5000"))
	if err != nil || got.Username != "ci" || got.Password != "pw" || string(got.CA) != "PEM" || !got.PlainHTTP {
		t.Errorf("FromData(Data) = %+v, %v", got, err)
	}
	if _, err := FromData("reg-5000", s.Data("reg:5000")); err == nil {
		t.Error("settings stored for reg:5000 were taken for reg-5000, whose secret has the same name")
	}
}

// A registry on a loopback address answering plain HTTP is refused unless
// its settings allow it, though go-containerregistry would fall back to
// plain HTTP by itself.
func TestPlainHTTPOnlyWhenAllowed(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`, http.StatusNotFound)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()

	ref, err := Parse("oci://"+host+"/app:1", false)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Resolve(ctx, ref, Settings{}, DefaultPlatform())
	if e := Explain("oci://"+host+"/app:1", host, Settings{}, PullFix(host), err); !errdefs.IsFailedPrecondition(e) || !strings.Contains(e.Error(), "plain HTTP is not allowed") {
		t.Errorf("without --plain-http: %v (from %v)", e, err)
	}

	ref, err = Parse("oci://"+host+"/app:1", true)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Resolve(ctx, ref, Settings{PlainHTTP: true}, DefaultPlatform())
	if e := Explain("oci://"+host+"/app:1", host, Settings{}, PullFix(host), err); !errdefs.IsNotFound(e) {
		t.Errorf("with --plain-http: %v (from %v), want the registry's not found", e, err)
	}
	if !errors.Is(Explain("r", host, Settings{}, PullFix(host), context.Canceled), context.Canceled) {
		t.Error("a canceled pull is not reported as canceled")
	}
}
