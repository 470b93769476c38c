package cliclient

import (
	"context"
	"time"

	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// CreateUIToken mints a dashboard token for this client's admin, valid
// for ttl (0: the server's default, 12 hours; at most 24 hours), and
// returns it with its expiry.
func (c *Client) CreateUIToken(ctx context.Context, ttl time.Duration) (string, time.Time, error) {
	if ttl < 0 || ttl > 0 && ttl < time.Second {
		return "", time.Time{}, Errorf("e.g. --ttl 8h or --ttl 30m", "--ttl %s is too short: at least 1s", ttl)
	}
	resp, err := call(ctx, c, "", c.api.CreateUIToken, &wasmorchv1.CreateUITokenRequest{TtlSeconds: int64(ttl / time.Second)})
	if err != nil {
		return "", time.Time{}, err
	}
	return resp.GetToken(), time.Unix(0, resp.GetExpiresUnixNano()), nil
}
