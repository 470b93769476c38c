package cliclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/grpc"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// ParseData parses the K=V arguments of `config set` and `secret set`. With
// files, a value @PATH is read from the file PATH and @- from stdin (once);
// a literal value that starts with @ cannot then be given on the command
// line. Errors never quote a value: it may be a secret.
func ParseData(pairs []string, files bool, stdin io.Reader) (map[string]string, error) {
	data := make(map[string]string, len(pairs))
	stdinUsed := false
	for i, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return nil, Errorf("give each key as KEY=VALUE", "argument %d is not KEY=VALUE", i+1)
		}
		if k == "" {
			return nil, Errorf("give each key as KEY=VALUE", "an argument has an empty key")
		}
		if _, dup := data[k]; dup {
			return nil, Errorf("give each key once", "key %s is given twice", k)
		}
		if files && strings.HasPrefix(v, "@") {
			path := v[1:]
			var b []byte
			var err error
			switch {
			case path == "-" && stdinUsed:
				return nil, Errorf("read at most one key from stdin", "key %s: stdin was read already", k)
			case path == "-":
				stdinUsed = true
				b, err = io.ReadAll(stdin)
			default:
				b, err = os.ReadFile(path)
			}
			if err != nil {
				return nil, Errorf("check the path", "key %s: %v", k, err)
			}
			v = string(b)
		}
		data[k] = v
	}
	return data, nil
}

// SetConfig creates or replaces a config; dryRun only says what it would do.
func (c *Client) SetConfig(ctx context.Context, name string, data map[string]string, dryRun bool) (*wasmorchv1.SetConfigResponse, error) {
	if err := ValidateName(name); err != nil {
		return nil, Errorf(nameRules, "invalid config name: %v", err)
	}
	return objectCall(ctx, c, "config", c.api.SetConfig, &wasmorchv1.SetConfigRequest{Name: name, Data: data, DryRun: dryRun})
}

// GetConfig reads one config.
func (c *Client) GetConfig(ctx context.Context, name string) (*wasmorchv1.Config, error) {
	return objectCall(ctx, c, "config", c.api.GetConfig, &wasmorchv1.GetConfigRequest{Name: name})
}

// ListConfigs lists every config.
func (c *Client) ListConfigs(ctx context.Context) ([]*wasmorchv1.Config, error) {
	resp, err := objectCall(ctx, c, "config", c.api.ListConfigs, &wasmorchv1.ListConfigsRequest{})
	return resp.GetConfigs(), err
}

// DeleteConfig removes a config that no workload uses.
func (c *Client) DeleteConfig(ctx context.Context, name string) error {
	_, err := objectCall(ctx, c, "config", c.api.DeleteConfig, &wasmorchv1.DeleteConfigRequest{Name: name})
	return err
}

// SetSecret creates or replaces a secret; dryRun only says what it would do.
func (c *Client) SetSecret(ctx context.Context, name string, data map[string]string, dryRun bool) (*wasmorchv1.SetSecretResponse, error) {
	if err := ValidateName(name); err != nil {
		return nil, Errorf(nameRules, "invalid secret name: %v", err)
	}
	return objectCall(ctx, c, "secret", c.api.SetSecret, &wasmorchv1.SetSecretRequest{Name: name, Data: data, DryRun: dryRun})
}

// GetSecret reads what the API shows of a secret: its keys and digest.
func (c *Client) GetSecret(ctx context.Context, name string) (*wasmorchv1.SecretView, error) {
	return objectCall(ctx, c, "secret", c.api.GetSecret, &wasmorchv1.GetSecretRequest{Name: name})
}

// ListSecrets lists every secret (keys and digests).
func (c *Client) ListSecrets(ctx context.Context) ([]*wasmorchv1.SecretView, error) {
	resp, err := objectCall(ctx, c, "secret", c.api.ListSecrets, &wasmorchv1.ListSecretsRequest{})
	return resp.GetSecrets(), err
}

// DeleteSecret removes a secret that no workload uses.
func (c *Client) DeleteSecret(ctx context.Context, name string) error {
	_, err := objectCall(ctx, c, "secret", c.api.DeleteSecret, &wasmorchv1.DeleteSecretRequest{Name: name})
	return err
}

// RotateSecretKey re-encrypts every secret under a new data key.
func (c *Client) RotateSecretKey(ctx context.Context) (*wasmorchv1.RotateSecretKeyResponse, error) {
	return objectCall(ctx, c, "secret", c.api.RotateSecretKey, &wasmorchv1.RotateSecretKeyRequest{})
}

// Outcome names what a set or apply did to one object, as apply reports
// it: created, configured or unchanged.
func Outcome(created, changed bool) string {
	switch {
	case created:
		return "created"
	case changed:
		return "configured"
	}
	return "unchanged"
}

// describeRolled is the note a set prints when it rolled workloads.
func describeRolled(rolled []string) string {
	if len(rolled) == 0 {
		return ""
	}
	return fmt.Sprintf(" (rolling workload %s)", strings.Join(rolled, ", "))
}

// SetSummary is the line `config set` / `secret set` print.
func SetSummary(kind, name string, created, changed bool, rolled []string) string {
	return fmt.Sprintf("%s/%s %s%s", kind, name, Outcome(created, changed), describeRolled(rolled))
}

// objectCall is call for config and secret requests, with hints that
// point at configs and secrets rather than workloads and nodes.
func objectCall[Req, Resp any](ctx context.Context, c *Client, kind string, rpc func(context.Context, Req, ...grpc.CallOption) (Resp, error), req Req) (Resp, error) {
	resp, err := call(ctx, c, "", rpc, req)
	var e *Error
	if errors.As(err, &e) {
		switch {
		case errdefs.IsNotFound(e.Cause):
			e.Hint = "see 'wasmorch " + kind + " list'"
		case errdefs.IsFailedPrecondition(e.Cause):
			e.Hint = "see 'wasmorch " + kind + " list' and 'wasmorch get workloads'"
		}
	}
	return resp, err
}

// CheckObjectName checks a config or secret name, a DNS label like a
// workload's.
func CheckObjectName(kind, name string) error {
	if err := ValidateName(name); err != nil {
		return Errorf(nameRules, "invalid %s name: %v", kind, err)
	}
	return nil
}
