package registry

import (
	"fmt"
	"strings"
)

// A registry's Settings are kept in the cluster as a secret (encrypted at
// rest like every secret) named SecretName(host), written by 'wasmorch
// registry login' and read by the control plane when it pulls; nodes
// never see them, as they fetch what was pulled from the control plane.
const (
	SecretPrefix = "registry-"

	keyServer    = "server"
	keyUsername  = "username"
	keyPassword  = "password"
	keyCA        = "ca.crt"
	keyPlainHTTP = "plain-http"
)

// SecretName is the name of the secret holding host's Settings:
// "registry-" then host in lowercase with every character but letters and
// digits turned into '-' ("registry-127-0-0-1-5000"), at most 63
// characters.
func SecretName(host string) string {
	var b strings.Builder
	b.WriteString(SecretPrefix)
	for _, r := range strings.ToLower(host) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	return strings.TrimRight(b.String()[:min(b.Len(), 63)], "-")
}

// Data is s as the secret's data.
func (s Settings) Data(host string) map[string]string {
	d := map[string]string{keyServer: host}
	if s.Username != "" {
		d[keyUsername] = s.Username
	}
	if s.Password != "" {
		d[keyPassword] = s.Password
	}
	if len(s.CA) > 0 {
		d[keyCA] = string(s.CA)
	}
	if s.PlainHTTP {
		d[keyPlainHTTP] = "true"
	}
	return d
}

// FromData reads the Settings of host from its secret's data; a secret of
// the same name written for another host is an error.
func FromData(host string, d map[string]string) (Settings, error) {
	if got := d[keyServer]; got != host {
		return Settings{}, fmt.Errorf("secret %s holds the settings of registry %q, not %q; log in to %s again", SecretName(host), got, host, host)
	}
	return Settings{
		Username:  d[keyUsername],
		Password:  d[keyPassword],
		CA:        []byte(d[keyCA]),
		PlainHTTP: d[keyPlainHTTP] == "true",
	}, nil
}
