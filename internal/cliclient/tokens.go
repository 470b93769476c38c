package cliclient

import (
	"context"
	"time"

	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TokenInfo is a join token as listed: never its secret.
type TokenInfo struct {
	ID          string    `json:"id"`
	Role        string    `json:"role"`
	Expires     time.Time `json:"expires"`
	Created     time.Time `json:"created"`
	Description string    `json:"description,omitempty"`
}

func tokenInfo(t *wasmorchv1.JoinToken) TokenInfo {
	return TokenInfo{ID: t.GetId(), Role: t.GetRole(), Expires: time.Unix(0, t.GetExpiresUnixNano()), Created: time.Unix(0, t.GetCreatedUnixNano()), Description: t.GetDescription()}
}

// CreateToken makes a join token for role ("agent" or "server") valid for
// ttl, and returns it (shown this once) with its record.
func (c *Client) CreateToken(ctx context.Context, role string, ttl time.Duration, description string) (string, TokenInfo, error) {
	if ttl < time.Second {
		return "", TokenInfo{}, Errorf("e.g. --ttl 24h or --ttl 30m", "--ttl %s is too short: at least 1s", ttl)
	}
	resp, err := call(ctx, c, "", c.api.CreateToken, &wasmorchv1.CreateTokenRequest{Role: role, TtlSeconds: int64(ttl / time.Second), Description: description})
	if err != nil {
		return "", TokenInfo{}, err
	}
	return resp.GetToken(), tokenInfo(resp.GetInfo()), nil
}

// ListTokens lists the join tokens, expired ones included.
func (c *Client) ListTokens(ctx context.Context) ([]TokenInfo, error) {
	resp, err := call(ctx, c, "", c.api.ListTokens, &wasmorchv1.ListTokensRequest{})
	if err != nil {
		return nil, err
	}
	out := make([]TokenInfo, 0, len(resp.GetTokens()))
	for _, t := range resp.GetTokens() {
		out = append(out, tokenInfo(t))
	}
	return out, nil
}

// RevokeToken deletes a join token (by id, or the whole token).
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	_, err := call(ctx, c, "", c.api.RevokeToken, &wasmorchv1.RevokeTokenRequest{Id: id})
	return err
}
