package api

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Who may call what. Every connection to the API is TLS with this member's
// certificate; a client certificate is requested, judged once per
// connection (apiCreds), and each call is authorized here:
//
//   - Control: an admin (the CLI) or a member;
//   - Agent: a node, for its own node name only, or a member; Join needs
//     no certificate but a valid join token;
//   - AddMember and PromoteMember: also a server-role join token, sent as
//     "authorization: Bearer <token>" metadata (a member joining).

// tokensPrefix holds join tokens, by id.
const tokensPrefix = store.TokensPrefix

// DefaultTokenTTL is how long a join token is valid unless told otherwise.
const DefaultTokenTTL = 24 * time.Hour

// Token roles.
const (
	TokenRoleAgent  = "agent"
	TokenRoleServer = "server"
)

// peerAuth is a connection's TLS state and who its certificate names.
type peerAuth struct {
	credentials.TLSInfo
	id  auth.Identity
	err error // why the certificate names nobody: none, or not valid here
}

// apiCreds is the API's TLS with the client's certificate judged once, at
// the handshake; the verdict rides on the connection's AuthInfo, so that a
// refusal can say why rather than end in a TLS alert.
func newAPICreds(sec *security) credentials.TransportCredentials {
	return &apiCreds{TransportCredentials: credentials.NewTLS(auth.MemberServerTLS(sec.member)), sec: sec}
}

type apiCreds struct {
	credentials.TransportCredentials
	sec *security
}

func (c *apiCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, ai, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return nil, nil, err
	}
	ti, ok := ai.(credentials.TLSInfo)
	if !ok {
		_ = conn.Close()
		return nil, nil, fmt.Errorf("unexpected transport %T", ai)
	}
	id, verr := auth.VerifyPeer(c.sec.ca.Pool(), ti.State.PeerCertificates, time.Now())
	return conn, peerAuth{TLSInfo: ti, id: id, err: verr}, nil
}

func (c *apiCreds) Clone() credentials.TransportCredentials {
	return &apiCreds{TransportCredentials: c.TransportCredentials.Clone(), sec: c.sec}
}

// callerOf is who the connection of ctx authenticated as.
func callerOf(ctx context.Context) (auth.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return auth.Identity{}, errdefs.Unauthenticatedf("no peer")
	}
	pa, ok := p.AuthInfo.(peerAuth)
	if !ok {
		return auth.Identity{}, errdefs.Unauthenticatedf("the connection is not TLS with a wasmorch credential")
	}
	if pa.err != nil {
		return auth.Identity{}, errdefs.Unauthenticatedf("%v", pa.err)
	}
	return pa.id, nil
}

const (
	controlService = "/wasmorch.v1.Control/"
	agentService   = "/wasmorch.v1.Agent/"
)

// authorize decides a call by its method and caller; for a node it
// returns the one node name the call may concern.
func (s *Server) authorize(ctx context.Context, method string) (node string, err error) {
	if method == v1.Agent_Join_FullMethodName {
		return "", nil // the token in the request is checked by Join
	}
	id, idErr := callerOf(ctx)
	if idErr != nil && (method == v1.Control_AddMember_FullMethodName || method == v1.Control_PromoteMember_FullMethodName) {
		if tok, ok := bearerToken(ctx); ok {
			if _, err := s.checkToken(ctx, tok, TokenRoleServer); err != nil {
				return "", err
			}
			return "", nil
		}
	}
	if idErr != nil {
		return "", errdefs.Unauthenticatedf("%v: every call needs a credential of this cluster", idErr)
	}
	switch {
	case id.Role == auth.RoleMember:
		return "", nil
	case strings.HasPrefix(method, controlService) && id.Role == auth.RoleAdmin:
		return "", nil
	case strings.HasPrefix(method, agentService) && id.Role == auth.RoleNode:
		return id.Name, nil
	}
	return "", errdefs.Deniedf("%s may not call %s", id, method)
}

// nodeOf is the node a request concerns, for those that name one.
func nodeOf(req any) (string, bool) {
	switch r := req.(type) {
	case *v1.RegisterRequest:
		return r.GetNode().GetName(), true
	case *v1.HeartbeatRequest:
		return r.GetNode(), true
	case *v1.SessionRequest:
		return r.GetNode(), true
	case *v1.StatusBatch:
		return r.GetNode(), true
	}
	return "", false
}

func checkNode(allowed string, req any) error {
	if allowed == "" {
		return nil
	}
	if n, ok := nodeOf(req); ok && n != allowed {
		return errdefs.Deniedf("the certificate of node %s does not allow acting for node %q", allowed, n)
	}
	return nil
}

func (s *Server) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	node, err := s.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	if err := checkNode(node, req); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	node, err := s.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, &checkedStream{ServerStream: ss, node: node})
}

// checkedStream checks each request of a stream against the node the
// caller may act for.
type checkedStream struct {
	grpc.ServerStream
	node string
}

func (c *checkedStream) RecvMsg(m any) error {
	if err := c.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return checkNode(c.node, m)
}

func bearerToken(ctx context.Context) (string, bool) {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			return t, true
		}
	}
	return "", false
}

// checkToken verifies a presented join token for role: a server token also
// admits an agent.
func (s *Server) checkToken(ctx context.Context, raw, role string) (*v1.JoinToken, error) {
	tok, err := auth.ParseToken(raw)
	if err != nil {
		return nil, errdefs.Unauthenticatedf("%v", err)
	}
	if tok.CAPin != s.sec.ca.Pin() {
		return nil, errdefs.Unauthenticatedf("join token %s was made for another cluster", tok.ID)
	}
	resp, err := s.store.Client.Get(ctx, tokensPrefix+tok.ID)
	if err != nil {
		return nil, errdefs.Unavailablef("read join token: %v", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, errdefs.Unauthenticatedf("join token %s is not valid (unknown or revoked): create one with 'wasmorch token create'", tok.ID)
	}
	rec := &v1.JoinToken{}
	if err := proto.Unmarshal(resp.Kvs[0].Value, rec); err != nil {
		return nil, fmt.Errorf("join token %s: %w", tok.ID, err)
	}
	if err := auth.CheckToken(tok, rec.GetSecretHash(), time.Unix(0, rec.GetExpiresUnixNano()), time.Now()); err != nil {
		return nil, errdefs.Unauthenticatedf("%v", err)
	}
	if role == TokenRoleServer && rec.GetRole() != TokenRoleServer {
		return nil, errdefs.Deniedf("join token %s is for agents; a control-plane member needs one made with 'wasmorch token create --role server'", tok.ID)
	}
	return rec, nil
}

// CreateJoinToken stores a new join token and returns it; the secret is
// kept only hashed.
func (s *Server) CreateJoinToken(ctx context.Context, role string, ttl time.Duration, description string) (string, *v1.JoinToken, error) {
	switch role {
	case "":
		role = TokenRoleAgent
	case TokenRoleAgent, TokenRoleServer:
	default:
		return "", nil, errdefs.Invalidf("token role %q is not agent or server", role)
	}
	if ttl == 0 {
		ttl = DefaultTokenTTL
	}
	if ttl < 0 {
		return "", nil, errdefs.Invalidf("token lifetime %s is negative", ttl)
	}
	tok, err := s.sec.ca.NewToken()
	if err != nil {
		return "", nil, err
	}
	now := time.Now()
	rec := &v1.JoinToken{Id: tok.ID, SecretHash: auth.SecretHash(tok.Secret), Role: role, ExpiresUnixNano: now.Add(ttl).UnixNano(), CreatedUnixNano: now.UnixNano(), Description: description}
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
	tok, rec, err := a.s.CreateJoinToken(ctx, req.GetRole(), time.Duration(req.GetTtlSeconds())*time.Second, req.GetDescription())
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

// Join issues a node certificate to an agent presenting a valid join
// token, for the key in its certificate request.
func (a *agentAPI) Join(ctx context.Context, req *v1.JoinRequest) (*v1.JoinResponse, error) {
	if _, err := a.s.checkToken(ctx, req.GetToken(), TokenRoleAgent); err != nil {
		return nil, err
	}
	if err := workloads.ValidateNodeName(req.GetNode()); err != nil {
		return nil, err
	}
	if err := a.s.cache.Sync(ctx); err != nil {
		return nil, err
	}
	if a.s.cache.NodeAlive(req.GetNode()) {
		return nil, errdefs.Preconditionf("node %s is registered and Ready: a second agent cannot take its name; choose another --name, or stop that agent first", req.GetNode())
	}
	cert, err := a.s.sec.ca.SignRequest(req.GetCsr(), auth.Identity{Role: auth.RoleNode, Name: req.GetNode()}, time.Now())
	if err != nil {
		return nil, err
	}
	a.s.log.Info("node joined with a token; issued its certificate", "node", req.GetNode())
	return &v1.JoinResponse{Certificate: cert, CaCertificate: a.s.sec.ca.CertPEM}, nil
}

// RenewCertificate issues the calling node a new certificate for the key
// in its request; the name comes from the certificate it calls with.
func (a *agentAPI) RenewCertificate(ctx context.Context, req *v1.RenewRequest) (*v1.JoinResponse, error) {
	id, err := callerOf(ctx)
	if err != nil {
		return nil, err
	}
	if id.Role != auth.RoleNode {
		return nil, errdefs.Deniedf("only nodes renew their certificates here; %s is not a node", id)
	}
	cert, err := a.s.sec.ca.SignRequest(req.GetCsr(), id, time.Now())
	if err != nil {
		return nil, err
	}
	return &v1.JoinResponse{Certificate: cert, CaCertificate: a.s.sec.ca.CertPEM}, nil
}

// checkOwnership refuses a batch that reports on an instance bound to
// another node: a node reports on its own instances only. An instance is
// bound to one node for its whole life, so the member's cache answers for
// every instance it holds bound; etcd is read (locally, serializable) only
// for the others: an instance deleted meanwhile (a final report), or one
// bound a moment ago through another member.
func (a *agentAPI) checkOwnership(ctx context.Context, batch *v1.StatusBatch) error {
	sts := batch.GetStatuses()
	node := batch.GetNode()
	var unknown []string
	denied := ""
	a.s.cache.Read(func(r cache.Reader) {
		for _, st := range sts {
			if st.GetId() == "" {
				continue // ReportStatus skips it
			}
			e, ok := r.Instance(st.GetId())
			switch {
			case !ok || e.Value.GetNode() == "":
				unknown = append(unknown, st.GetId())
			case e.Value.GetNode() != node && denied == "":
				denied = st.GetId()
			}
		}
	})
	if denied != "" {
		return errdefs.Deniedf("node %s may not report on instance %s, which is not bound to it", node, denied)
	}
	for start := 0; start < len(unknown); start += store.MaxOpsPerTxn / 2 {
		end := min(start+store.MaxOpsPerTxn/2, len(unknown))
		ops := make([]clientv3.Op, 0, end-start)
		for _, id := range unknown[start:end] {
			ops = append(ops, clientv3.OpGet(a.s.store.Instances.Key(id), clientv3.WithSerializable()))
		}
		resp, err := a.s.store.Client.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return errdefs.Unavailablef("read instances: %v", err)
		}
		for i, r := range resp.Responses {
			kvs := r.GetResponseRange().GetKvs()
			if len(kvs) == 0 {
				continue // gone: the report is dropped where it is written
			}
			inst, err := a.s.store.Instances.Decode(kvs[0].Value)
			if err != nil {
				return err
			}
			if inst.GetNode() != node {
				return errdefs.Deniedf("node %s may not report on instance %s, which is not bound to it", node, unknown[start+i])
			}
		}
	}
	return nil
}
