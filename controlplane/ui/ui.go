// Package ui is the web dashboard a member serves at /ui (docs/dashboard.md):
// nodes, workloads, instances, events and logs, kept live in the browser
// by the Watch API, and the actions of the CLI (scale, rollout undo,
// promote and restart, delete) behind a confirmation. It holds no cluster
// state and reads nothing itself: every request is translated into a call
// of the member's own Control API (paged lists, Watch, Logs), made with
// the browser's dashboard token, so the dashboard is authorized, paged and
// answered exactly as the CLI is.
//
// The package is cut by layer: session.go authenticates browsers (the
// token cookie, the login page, every refusal a 401), api.go turns JSON
// requests into Control calls, stream.go turns the Watch and Logs streams
// into server-sent events, and assets/ is the page itself (plain HTML,
// JavaScript and CSS, embedded: no build step, nothing fetched from
// elsewhere).
package ui

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Prefix is where the dashboard is served.
const Prefix = "/ui/"

// Config is what the dashboard takes from its member.
type Config struct {
	// Control is the member's own Control API, dialled without a client
	// certificate: each call carries the dashboard token of the browser
	// it is made for, which the API takes for the admin who minted it.
	Control v1.ControlClient
	// Verify checks a dashboard token (api.Server.VerifyUIToken); the
	// dashboard serves nothing to a request whose token it refuses.
	Verify func(ctx context.Context, token string) (auth.UIToken, error)
	// Member is this member's name, shown in the page's header.
	Member string
	Logger *slog.Logger
}

// Validate checks that the dashboard has what it needs.
func (c Config) Validate() error {
	if c.Control == nil {
		return errors.New("dashboard: no Control API client")
	}
	if c.Verify == nil {
		return errors.New("dashboard: no token verifier")
	}
	return nil
}

// Dashboard is the /ui handler.
type Dashboard struct {
	cfg Config
	log *slog.Logger
	mux *http.ServeMux
}

var _ http.Handler = (*Dashboard)(nil)

// New builds the dashboard's handler.
func New(cfg Config) (*Dashboard, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := &Dashboard{cfg: cfg, log: cfg.Logger.With("component", "dashboard"), mux: http.NewServeMux()}
	// Only logging in is served without a valid token; everything else,
	// unknown paths included, is refused with the login page first.
	d.mux.HandleFunc("POST /ui/login", d.login)
	authed := http.NewServeMux()
	authed.HandleFunc("GET /ui/{$}", d.page)
	authed.HandleFunc("GET /ui/static/{file}", d.static)
	authed.HandleFunc("POST /ui/logout", d.logout)
	authed.HandleFunc("GET /ui/api/session", d.session)
	authed.HandleFunc("GET /ui/api/list/{kind}", d.list)
	authed.HandleFunc("GET /ui/api/watch", d.watch)
	authed.HandleFunc("GET /ui/api/workloads/{name}", d.workload)
	authed.HandleFunc("GET /ui/api/workloads/{name}/logs", d.logs)
	authed.HandleFunc("POST /ui/api/workloads/{name}/scale", d.scale)
	authed.HandleFunc("POST /ui/api/workloads/{name}/rollout/{action}", d.rollout)
	authed.HandleFunc("DELETE /ui/api/workloads/{name}", d.delete)
	d.mux.Handle(Prefix, d.requireToken(authed))
	d.mux.Handle("/ui", http.RedirectHandler(Prefix, http.StatusFound))
	return d, nil
}

// ServeHTTP serves the dashboard; every answer forbids caching and
// framing, and scripts and styles from anywhere but the member itself.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	d.mux.ServeHTTP(w, r)
}
