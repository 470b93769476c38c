package api

import (
	"context"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/controlplane/certrecords"
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
	if cert := callerCert(ctx); cert != nil {
		return auth.Serial(cert)
	}
	return ""
}

// VerifyUIToken checks a dashboard token as every call that carries one
// is checked, and returns what it says: signed by the cluster CA,
// unexpired, and minted with a certificate that is not revoked (a token
// is worth no more than the credential that minted it). The dashboard
// checks the token of each browser request with it before it serves
// anything.
func (s *Server) VerifyUIToken(ctx context.Context, raw string) (auth.UIToken, error) {
	t, err := auth.VerifyUIToken(s.sec.ca.Cert, raw, time.Now())
	if err != nil {
		return auth.UIToken{}, err
	}
	rec, err := s.revoked.Lookup(ctx, t.Minter)
	if err != nil {
		return auth.UIToken{}, err
	}
	if rec != nil {
		return auth.UIToken{}, errdefs.Unauthenticatedf("the dashboard token was minted with a credential that is revoked since: %v", certrecords.RevokedError(rec))
	}
	return t, nil
}

// uiTokenMinter is the serial of the certificate that minted a dashboard
// token the stream's call was authorized with (its streams end when that
// certificate is revoked), and the check to run again once the stream is
// tracked.
func (s *Server) uiTokenMinter(ctx context.Context, raw string) (string, func(context.Context) error) {
	t, err := s.VerifyUIToken(ctx, raw)
	if err != nil {
		return "", nil // authorize refused it already
	}
	return t.Minter, func(ctx context.Context) error {
		_, err := s.VerifyUIToken(ctx, raw)
		return err
	}
}
