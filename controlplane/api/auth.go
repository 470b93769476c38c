package api

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/cache"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Who may call what. Every connection to the API is TLS with this member's
// certificate; a client certificate is requested, judged once per
// connection (apiCreds), checked again on every call against its expiry
// and the revocation list (controlplane/certrecords), and each call is authorized here:
//
//   - Control: an admin (the CLI) or a member;
//   - Agent: a node, for its own node name only, or a member; Join needs
//     no certificate but a valid join token;
//   - AddMember and PromoteMember: also a server-role join token, sent as
//     "authorization: Bearer <token>" metadata (a member joining);
//   - without a certificate, a dashboard token sent the same way stands
//     for the admin who minted it (uitoken.go);
//   - the standard health service (grpc.health.v1): anyone, with or
//     without a certificate: it says only whether the member serves, as
//     a load balancer or a probe needs to know;
//   - server reflection: any certificate of this cluster (admin, member,
//     node): it describes the API, not the cluster's data, but a caller
//     without a credential could do nothing with it.

// peerAuth is a connection's TLS state and who its certificate names.
type peerAuth struct {
	credentials.TLSInfo
	id   auth.Identity
	leaf *x509.Certificate // the client's certificate, nil without one
	err  error             // why the certificate names nobody: none, or not valid here
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
	pa := peerAuth{TLSInfo: ti, id: id, err: verr}
	if verr == nil {
		pa.leaf = ti.State.PeerCertificates[0]
	}
	return conn, pa, nil
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

// callerCert is the certificate the connection of ctx presented, if a
// valid one.
func callerCert(ctx context.Context) *x509.Certificate {
	if p, ok := peer.FromContext(ctx); ok {
		if pa, ok := p.AuthInfo.(peerAuth); ok {
			return pa.leaf
		}
	}
	return nil
}

const (
	controlService    = "/wasmorch.v1.Control/"
	agentService      = "/wasmorch.v1.Agent/"
	healthService     = "/grpc.health.v1.Health/"
	reflectionService = "/grpc.reflection."
)

// authorize decides a call by its method and caller; for a node it
// returns the one node name the call may concern.
func (s *Server) authorize(ctx context.Context, method string) (node string, err error) {
	if method == v1.Agent_Join_FullMethodName || strings.HasPrefix(method, healthService) {
		return "", nil // Join checks the token in the request; health tells nothing else
	}
	id, idErr := callerOf(ctx)
	if idErr != nil && (method == v1.Control_AddMember_FullMethodName || method == v1.Control_PromoteMember_FullMethodName) {
		if tok, ok := bearerToken(ctx); ok {
			if _, _, err := s.checkToken(ctx, tok, TokenRoleServer); err != nil {
				return "", err
			}
			return "", nil
		}
	}
	if idErr != nil {
		if tok, ok := bearerToken(ctx); ok && auth.IsUIToken(tok) {
			t, err := s.VerifyUIToken(ctx, tok) // the dashboard, for a browser (uitoken.go)
			if err != nil {
				return "", err
			}
			id, idErr = t.Identity, nil
		}
	}
	if idErr != nil {
		return "", errdefs.Unauthenticatedf("%v: every call needs a credential of this cluster", idErr)
	}
	if err := s.checkCertificate(ctx, callerCert(ctx)); err != nil {
		return "", err
	}
	switch {
	case id.Role == auth.RoleMember:
		return "", nil
	case strings.HasPrefix(method, reflectionService):
		return "", nil // any identity of this cluster
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
	case *v1.RemovedVolumesRequest: // state
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

// streamAuth authorizes a stream, checks each of its requests, and ends
// it when the caller's certificate is revoked meanwhile, with the reason.
func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	node, err := s.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	cert := callerCert(ss.Context())
	serial, recheck := "", func(ctx context.Context) error { return s.checkCertificate(ctx, cert) }
	if cert != nil {
		serial = auth.Serial(cert)
	} else if tok, ok := bearerToken(ss.Context()); ok && auth.IsUIToken(tok) {
		// A dashboard token ends with the certificate that minted it.
		serial, recheck = s.uiTokenMinter(ss.Context(), tok)
	}
	if serial == "" {
		return h(srv, &checkedStream{ServerStream: ss, node: node, ctx: ss.Context()})
	}
	ctx, cancel := context.WithCancelCause(ss.Context())
	defer cancel(nil)
	untrack := s.revoked.Track(serial, cancel)
	defer untrack()
	// Revoked between the check above and the tracking: end it now.
	if err := recheck(ctx); err != nil {
		return err
	}
	err = h(srv, &checkedStream{ServerStream: ss, node: node, ctx: ctx})
	if ctx.Err() != nil && ss.Context().Err() == nil {
		return context.Cause(ctx) // revoked
	}
	return err
}

// checkedStream checks each request of a stream against the node the
// caller may act for, under a context that a revocation ends.
type checkedStream struct {
	grpc.ServerStream
	node string
	ctx  context.Context
}

func (c *checkedStream) Context() context.Context { return c.ctx }

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
