package api

import (
	"context"
	"time"

	"google.golang.org/grpc/peer"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Dashboard tokens (auth.UIToken): an admin mints one with its
// certificate (CreateUIToken); the web dashboard (controlplane/ui) then
// calls this API on the browser's behalf with no client certificate and
// the token as "authorization: Bearer wmui_..." metadata, which authorize
// takes for the identity of the admin who minted it. So the dashboard's
// calls are authorized, paged and answered exactly as the CLI's.

// CreateUIToken mints a dashboard token for the calling admin.
func (a *controlAPI) CreateUIToken(ctx context.Context, req *v1.CreateUITokenRequest) (*v1.CreateUITokenResponse, error) {
	id, err := callerOf(ctx)
	if err != nil {
		return nil, errdefs.Unauthenticatedf("a dashboard token is minted with an admin credential (the CLI's), not with another dashboard token")
	}
	if id.Role != auth.RoleAdmin {
		return nil, errdefs.Deniedf("%s may not mint a dashboard token: only admins do", id)
	}
	ttl := time.Duration(req.GetTtlSeconds()) * time.Second
	switch {
	case ttl == 0:
		ttl = auth.DefaultUITokenTTL
	case ttl < 0:
		return nil, errdefs.Invalidf("dashboard token lifetime %s is negative", ttl)
	case ttl > auth.MaxUITokenTTL:
		return nil, errdefs.Invalidf("dashboard token lifetime %s is longer than %s: dashboard tokens are short-lived; mint another when it expires", ttl, auth.MaxUITokenTTL)
	}
	now := time.Now()
	tok := auth.UIToken{Identity: id, Minter: callerSerial(ctx), Issued: now, Expires: now.Add(ttl)}
	raw, err := a.s.sec.ca.SignUIToken(tok)
	if err != nil {
		return nil, err
	}
	a.s.log.Info("minted a dashboard token", "for", id.String(), "expires", tok.Expires.UTC().Format(time.RFC3339))
	return &v1.CreateUITokenResponse{Token: raw, ExpiresUnixNano: tok.Expires.UnixNano()}, nil
}

// callerSerial is the serial of the client certificate of ctx's
// connection, "" without one.
func callerSerial(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok {
		if pa, ok := p.AuthInfo.(peerAuth); ok && len(pa.State.PeerCertificates) > 0 {
			return pa.State.PeerCertificates[0].SerialNumber.String()
		}
	}
	return ""
}

// VerifyUIToken checks a dashboard token as every call that carries one
// is checked, and returns what it says: the dashboard checks the token of
// each browser request with it before it serves anything.
func (s *Server) VerifyUIToken(ctx context.Context, raw string) (auth.UIToken, error) {
	return auth.VerifyUIToken(s.sec.ca.Cert, raw, time.Now())
}
