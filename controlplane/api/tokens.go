package api

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Join tokens (/wasmorch/tokens/<id>): the secret kept only hashed, a
// role, an expiry, and what a join with the token may claim: one node
// name or any, a label set (a value "*" lets the agent choose it), and a
// number of joins.

// tokensPrefix holds join tokens, by id.
const tokensPrefix = store.TokensPrefix

// DefaultTokenTTL is how long a join token is valid unless told otherwise.
const DefaultTokenTTL = 24 * time.Hour

// Token roles.
const (
	TokenRoleAgent  = "agent"
	TokenRoleServer = "server"
)

// AnyValue as a token label's value lets the joining agent choose it.
const AnyValue = "*"

// TokenSpec is what a new join token admits.
type TokenSpec struct {
	Role        string // TokenRoleAgent (default) or TokenRoleServer
	TTL         time.Duration
	Description string
	Node        string            // the one node name it admits ("" any)
	Labels      map[string]string // labels a node joining with it gets
	Uses        int32             // joins it admits; 0 any number
}

// checkToken verifies a presented join token for role (a server token
// also admits an agent); it returns the record and its mod revision.
func (s *Server) checkToken(ctx context.Context, raw, role string) (*v1.JoinToken, int64, error) {
	tok, err := auth.ParseToken(raw)
	if err != nil {
		return nil, 0, errdefs.Unauthenticatedf("%v", err)
	}
	if tok.CAPin != s.sec.ca.Pin() {
		return nil, 0, errdefs.Unauthenticatedf("join token %s was made for another cluster", tok.ID)
	}
	resp, err := s.store.Client.Get(ctx, tokensPrefix+tok.ID)
	if err != nil {
		return nil, 0, errdefs.Unavailablef("read join token: %v", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, errdefs.Unauthenticatedf("join token %s is not valid (unknown or revoked): create one with 'wasmorch token create'", tok.ID)
	}
	rec := &v1.JoinToken{}
	if err := proto.Unmarshal(resp.Kvs[0].Value, rec); err != nil {
		return nil, 0, fmt.Errorf("join token %s: %w", tok.ID, err)
	}
	if err := auth.CheckToken(tok, rec.GetSecretHash(), time.Unix(0, rec.GetExpiresUnixNano()), time.Now()); err != nil {
		return nil, 0, errdefs.Unauthenticatedf("%v", err)
	}
	if role == TokenRoleServer && rec.GetRole() != TokenRoleServer {
		return nil, 0, errdefs.Deniedf("join token %s is for agents; a control-plane member needs one made with 'wasmorch token create --role server'", tok.ID)
	}
	if rec.GetUses() > 0 && rec.GetUsed() >= rec.GetUses() {
		return nil, 0, errdefs.Unauthenticatedf("join token %s is used up (%d of %d joins): create a new one with 'wasmorch token create'", tok.ID, rec.GetUsed(), rec.GetUses())
	}
	return rec, resp.Kvs[0].ModRevision, nil
}

// grantedLabels are the labels a node joining with tok gets when its
// agent asks for asked: the token's fixed labels, and the values asked for
// the labels the token leaves to the agent ("*"). Asking for a label the
// token does not name, or for another value than it fixes, is refused.
func grantedLabels(tok *v1.JoinToken, asked map[string]string) (map[string]string, error) {
	out := map[string]string{}
	for k, v := range tok.GetLabels() {
		if v != AnyValue {
			out[k] = v
		}
	}
	for _, k := range slices.Sorted(maps.Keys(asked)) {
		v := asked[k]
		allowed, ok := tok.GetLabels()[k]
		switch {
		case !ok:
			return nil, errdefs.Deniedf("join token %s does not allow label %s=%s (%s): labels that place workloads come from the token ('wasmorch token create --labels %s=%s') or an admin ('wasmorch node label NODE %s=%s')",
				tok.GetId(), k, v, allowedLabels(tok), k, v, k, v)
		case allowed == AnyValue:
			if err := workloads.ValidateLabel(k, v); err != nil {
				return nil, err
			}
			out[k] = v
		case allowed != v:
			return nil, errdefs.Deniedf("join token %s sets label %s=%s; the agent asked for %s=%s", tok.GetId(), k, allowed, k, v)
		}
	}
	return out, nil
}

// allowedLabels says which labels a token allows, for refusals.
func allowedLabels(tok *v1.JoinToken) string {
	if len(tok.GetLabels()) == 0 {
		return "it allows none"
	}
	return "it allows " + FormatLabels(tok.GetLabels())
}

// FormatLabels writes labels as k=v,... in key order.
func FormatLabels(labels map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		parts = append(parts, k+"="+labels[k])
	}
	return strings.Join(parts, ",")
}

// CreateJoinToken stores a new join token and returns it; the secret is
// kept only hashed.
func (s *Server) CreateJoinToken(ctx context.Context, spec TokenSpec) (string, *v1.JoinToken, error) {
	switch spec.Role {
	case "":
		spec.Role = TokenRoleAgent
	case TokenRoleAgent, TokenRoleServer:
	default:
		return "", nil, errdefs.Invalidf("token role %q is not agent or server", spec.Role)
	}
	if spec.TTL == 0 {
		spec.TTL = DefaultTokenTTL
	}
	if spec.TTL < 0 {
		return "", nil, errdefs.Invalidf("token lifetime %s is negative", spec.TTL)
	}
	if spec.Uses < 0 {
		return "", nil, errdefs.Invalidf("token uses %d is negative (0 admits any number of joins)", spec.Uses)
	}
	if spec.Node != "" {
		if err := workloads.ValidateNodeName(spec.Node); err != nil {
			return "", nil, err
		}
	}
	for k, v := range spec.Labels {
		if v == AnyValue {
			v = "x"
		}
		if err := workloads.ValidateLabel(k, v); err != nil {
			return "", nil, err
		}
	}
	tok, err := s.sec.ca.NewToken()
	if err != nil {
		return "", nil, err
	}
	now := time.Now()
	rec := &v1.JoinToken{Id: tok.ID, SecretHash: auth.SecretHash(tok.Secret), Role: spec.Role, ExpiresUnixNano: now.Add(spec.TTL).UnixNano(),
		CreatedUnixNano: now.UnixNano(), Description: spec.Description, Node: spec.Node, Labels: spec.Labels, Uses: spec.Uses}
	b, err := proto.Marshal(rec)
	if err != nil {
		return "", nil, err
	}
	if _, err := s.store.Client.Put(ctx, tokensPrefix+tok.ID, string(b)); err != nil {
		return "", nil, errdefs.Unavailablef("store join token: %v", err)
	}
	rec.SecretHash = nil
	return tok.String(), rec, nil
}

func (a *controlAPI) CreateToken(ctx context.Context, req *v1.CreateTokenRequest) (*v1.CreateTokenResponse, error) {
	tok, rec, err := a.s.CreateJoinToken(ctx, TokenSpec{Role: req.GetRole(), TTL: time.Duration(req.GetTtlSeconds()) * time.Second, Description: req.GetDescription(),
		Node: req.GetNode(), Labels: req.GetLabels(), Uses: req.GetUses()})
	if err != nil {
		return nil, err
	}
	return &v1.CreateTokenResponse{Token: tok, Info: rec}, nil
}

func (a *controlAPI) ListTokens(ctx context.Context, _ *v1.ListTokensRequest) (*v1.ListTokensResponse, error) {
	resp, err := a.s.store.Client.Get(ctx, tokensPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, errdefs.Unavailablef("list join tokens: %v", err)
	}
	out := &v1.ListTokensResponse{}
	for _, kv := range resp.Kvs {
		rec := &v1.JoinToken{}
		if proto.Unmarshal(kv.Value, rec) == nil {
			rec.SecretHash = nil
			out.Tokens = append(out.Tokens, rec)
		}
	}
	sort.Slice(out.Tokens, func(i, j int) bool { return out.Tokens[i].GetCreatedUnixNano() < out.Tokens[j].GetCreatedUnixNano() })
	return out, nil
}

func (a *controlAPI) RevokeToken(ctx context.Context, req *v1.RevokeTokenRequest) (*v1.RevokeTokenResponse, error) {
	id := strings.TrimPrefix(req.GetId(), "wmt_")
	id, _, _ = strings.Cut(id, ".")
	resp, err := a.s.store.Client.Delete(ctx, tokensPrefix+id)
	if err != nil {
		return nil, errdefs.Unavailablef("revoke join token: %v", err)
	}
	if resp.Deleted == 0 {
		return nil, errdefs.NotFoundf("no join token %q; see 'wasmorch token list'", id)
	}
	return &v1.RevokeTokenResponse{}, nil
}
