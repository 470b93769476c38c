package cliclient

import (
	"context"
	"time"

	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TokenInfo is a join token as listed: never its secret.
type TokenInfo struct {
	ID          string            `json:"id"`
	Role        string            `json:"role"`
	Expires     time.Time         `json:"expires"`
	Created     time.Time         `json:"created"`
	Description string            `json:"description,omitempty"`
	Node        string            `json:"node,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Uses        int32             `json:"uses,omitempty"` // 0: any number
	Used        int32             `json:"used"`
}

func tokenInfo(t *wasmorchv1.JoinToken) TokenInfo {
	return TokenInfo{ID: t.GetId(), Role: t.GetRole(), Expires: time.Unix(0, t.GetExpiresUnixNano()), Created: time.Unix(0, t.GetCreatedUnixNano()),
		Description: t.GetDescription(), Node: t.GetNode(), Labels: t.GetLabels(), Uses: t.GetUses(), Used: t.GetUsed()}
}

// TokenSpec is what a new join token admits: a role ("agent" or
// "server"), for how long, and optionally one node name, the labels a
// joining node gets (a value "*" left to the agent) and a number of joins.
type TokenSpec struct {
	Role        string
	TTL         time.Duration
	Description string
	Node        string
	Labels      map[string]string
	Uses        int32
}

// CreateToken makes a join token as spec says.
func (c *Client) CreateToken(ctx context.Context, spec TokenSpec) (string, TokenInfo, error) {
	if spec.TTL < time.Second {
		return "", TokenInfo{}, Errorf("e.g. --ttl 24h or --ttl 30m", "--ttl %s is too short: at least 1s", spec.TTL)
	}
	if spec.Uses < 0 {
		return "", TokenInfo{}, Errorf("e.g. --uses 1", "--uses %d is negative (0 admits any number of joins)", spec.Uses)
	}
	resp, err := call(ctx, c, "", c.api.CreateToken, &wasmorchv1.CreateTokenRequest{Role: spec.Role, TtlSeconds: int64(spec.TTL / time.Second),
		Description: spec.Description, Node: spec.Node, Labels: spec.Labels, Uses: spec.Uses})
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
