package ui

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/wasmorch/wasmorch/controlplane/auth"
)

// How a browser proves who it is: the dashboard token it logged in with,
// kept in a cookie only the member can read (HttpOnly), sent to this
// member's pages only (SameSite=Strict, Path=/ui/), and checked on every
// request. Nothing is kept on the member: a token is valid on every
// member of the cluster until it expires, and a request without a valid
// one is answered 401 with the login page, whatever it asked for.
//
// A request that changes something must also carry the X-Wasmorch-UI
// header, which the page's scripts add and which a form or a link from
// another site cannot: with the SameSite cookie, that keeps other sites
// from acting with a logged-in browser.

const (
	cookieName = "wasmorch_ui"
	// actionHeader marks a request made by the dashboard's own scripts.
	actionHeader = "X-Wasmorch-UI"
	// errorHeader carries why a 401 was answered, for the login page's
	// script.
	errorHeader = "X-Wasmorch-UI-Error"
)

type tokenKey struct{}

// requireToken serves next only to a request with a valid dashboard
// token; the token rides in the request's context to the API calls.
func (d *Dashboard) requireToken(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(cookieName)
		if err != nil || c.Value == "" {
			d.loginPage(w, "Log in with a dashboard token.")
			return
		}
		tok, err := d.cfg.Verify(r.Context(), c.Value)
		if err != nil {
			clearCookie(w)
			d.loginPage(w, err.Error())
			return
		}
		if r.Method != http.MethodGet && r.Header.Get(actionHeader) == "" {
			http.Error(w, "a change must come from the dashboard's own page (no "+actionHeader+" header)", http.StatusForbidden)
			return
		}
		ctx := context.WithValue(r.Context(), tokenKey{}, c.Value)
		// Nothing outlives the token: a stream ends when it expires.
		ctx, cancel := context.WithDeadline(ctx, tok.Expires)
		defer cancel()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// outgoing is ctx with the browser's token as the API call's credential.
func outgoing(ctx context.Context) context.Context {
	tok, _ := ctx.Value(tokenKey{}).(string)
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

// login checks a token the login page posts and, when it is valid, sets
// the cookie.
func (d *Dashboard) login(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(actionHeader) == "" {
		http.Error(w, "log in from the dashboard's login page", http.StatusForbidden)
		return
	}
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 16<<10)).Decode(&body); err != nil {
		d.loginPage(w, "The login request is not JSON with a token.")
		return
	}
	raw := strings.TrimSpace(body.Token)
	tok, err := d.cfg.Verify(r.Context(), raw)
	if err != nil {
		d.loginPage(w, err.Error())
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: raw, Path: Prefix, Expires: tok.Expires,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	d.log.Info("a browser logged in to the dashboard", "as", tok.Identity.String(), "token", tok.ID, "expires", tok.Expires.UTC().Format(time.RFC3339))
	w.WriteHeader(http.StatusNoContent)
}

// logout forgets the browser's token (the token itself stays valid until
// it expires: it is not stored anywhere to be struck out).
func (d *Dashboard) logout(w http.ResponseWriter, _ *http.Request) {
	clearCookie(w)
	w.WriteHeader(http.StatusNoContent)
}

func clearCookie(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: Prefix, MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode})
}

// session says who the browser is logged in as, and until when.
func (d *Dashboard) session(w http.ResponseWriter, r *http.Request) {
	tok, err := d.cfg.Verify(r.Context(), r.Context().Value(tokenKey{}).(string))
	if err != nil {
		d.loginPage(w, err.Error())
		return
	}
	writeJSON(w, map[string]any{"identity": tok.Identity.String(), "expires": tok.Expires.UTC().Format(time.RFC3339), "member": d.cfg.Member})
}

// loginPage answers 401 with the login page, saying why.
func (d *Dashboard) loginPage(w http.ResponseWriter, why string) {
	nonce := newNonce()
	var b bytes.Buffer
	if err := loginTemplate.Execute(&b, map[string]string{"Nonce": nonce, "Why": why, "TokenPrefix": auth.UITokenPrefix}); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", policy(nonce))
	h.Set(errorHeader, oneLine(why))
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write(b.Bytes())
}

// policy is the page's Content-Security-Policy: its own scripts and
// styles only (the login page's are inline, allowed by nonce).
func policy(nonce string) string {
	n := ""
	if nonce != "" {
		n = " 'nonce-" + nonce + "'"
	}
	return "default-src 'none'; script-src 'self'" + n + "; style-src 'self'" + n +
		"; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}

func newNonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func oneLine(s string) string { return strings.NewReplacer("\n", " ", "\r", " ").Replace(s) }

var loginTemplate = template.Must(template.ParseFS(assets, "assets/login.html"))
