package simulate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// A hollow node's identity is a node certificate from the cluster CA,
// obtained as the real worker obtains one (worker/identity.go): a key made
// on the node, a certificate request presented with the join token over
// TLS pinned to the token's CA, the certificate kept in DataDir/<node>/ so
// that a restart needs no token, and renewed over mutual TLS at two thirds
// of its lifetime.

const rpcTimeout = 5 * time.Second

// identity is a node's credential in use.
type identity struct {
	pool *x509.CertPool
	kp   *auth.Keypair
}

// loadIdentity reads node's credential from dir. It returns nil and why
// when there is none the node can use (none yet, another node's, expired,
// another cluster's than the token's), in which case the node joins.
func loadIdentity(dir, node string, token *auth.Token, now time.Time) (*identity, string, error) {
	nc, err := auth.LoadNodeCredential(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, "it has no node certificate in " + dir + " yet", nil
	}
	if err != nil {
		return nil, "", fmt.Errorf("node credential in %s: %w", dir, err)
	}
	id, err := parseIdentity(nc)
	if err != nil {
		return nil, "", fmt.Errorf("node credential in %s: %w", dir, err)
	}
	leaf := id.kp.Leaf()
	switch name, err := id.kp.Identity(); {
	case err != nil || name != (auth.Identity{Role: auth.RoleNode, Name: node}):
		return nil, fmt.Sprintf("the certificate in %s is not node %s's", dir, node), nil
	case !now.Before(leaf.NotAfter):
		return nil, fmt.Sprintf("its certificate in %s expired at %s", dir, leaf.NotAfter.UTC().Format(time.RFC3339)), nil
	case token != nil && !madeBy(*token, nc.CAPEM):
		return nil, "the join token is for another cluster than its certificate in " + dir, nil
	}
	return id, "", nil
}

// madeBy says whether token was made by the CA in caPEM.
func madeBy(token auth.Token, caPEM []byte) bool {
	ca, err := auth.ParseCertificate(caPEM)
	return err != nil || auth.PinOf(ca) == token.CAPin
}

func parseIdentity(nc auth.NodeCredential) (*identity, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(nc.CAPEM) {
		return nil, errdefs.Invalidf("no CA certificate")
	}
	kp, err := auth.NewKeypair(nc.CertPEM, nc.KeyPEM)
	if err != nil {
		return nil, err
	}
	return &identity{pool: pool, kp: kp}, nil
}

// isRefusal says whether a join error is final: the token or the request
// was refused, or the server is not the token's cluster. Anything else
// (the control plane not answering yet) is retried.
func isRefusal(err error) bool {
	return errors.Is(err, auth.ErrPinMismatch) || errdefs.IsUnauthenticated(err) || errdefs.IsPermissionDenied(err) ||
		errdefs.IsInvalidArgument(err) || errdefs.IsFailedPrecondition(err)
}

// joinClient returns the connection every node joins through: TLS pinned
// to the token's CA, no client certificate (a join needs none). The first
// call checks, with a handshake of its own as the real worker does, that
// the servers are the token's cluster, so that one that is not is named as
// such rather than as a connection failure.
func (s *Simulator) joinClient(ctx context.Context) (pb.AgentClient, error) {
	s.joinMu.Lock()
	defer s.joinMu.Unlock()
	if s.joinConn != nil {
		return pb.NewAgentClient(s.joinConn), nil
	}
	var reached bool
	var last error
	for _, addr := range s.cfg.Servers {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: rpcTimeout}, Config: auth.PinnedClientTLS(s.token.CAPin)}
		conn, err := d.DialContext(ctx, "tcp", addr)
		if errors.Is(err, auth.ErrPinMismatch) {
			return nil, fmt.Errorf("%w: %s is not the cluster this token was made for", auth.ErrPinMismatch, addr)
		}
		if err != nil {
			last = errdefs.Unavailablef("%s: %v", addr, err)
			continue
		}
		_ = conn.Close()
		reached = true
	}
	if !reached {
		return nil, last
	}
	cc, err := dial(s.cfg, credentials.NewTLS(auth.PinnedClientTLS(s.token.CAPin)))
	if err != nil {
		return nil, err
	}
	s.joinConn = cc
	return pb.NewAgentClient(cc), nil
}

// join presents the join token until the control plane issues the node's
// certificate, which it then keeps in the node's directory. Refusals end
// it; an unreachable control plane is retried with backoff.
func (n *hollowNode) join(ctx context.Context) error {
	s := n.sim
	csr, keyPEM, err := auth.NewRequest(n.name)
	if err != nil {
		return err
	}
	if err := acquire(ctx, s.slots); err != nil {
		return nil
	}
	defer release(s.slots)
	delay := s.cfg.reconnectBase
	for {
		resp, err := n.joinOnce(ctx, csr)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			nc := auth.NodeCredential{CAPEM: resp.GetCaCertificate(), CertPEM: resp.GetCertificate(), KeyPEM: keyPEM}
			id, err := parseIdentity(nc)
			if err != nil {
				return fmt.Errorf("node %s: the certificate the control plane issued: %w", n.name, err)
			}
			if err := auth.SaveNodeCredential(n.dir, nc); err != nil {
				return fmt.Errorf("node %s: %w", n.name, err)
			}
			n.id = id
			s.joins.Add(1)
			return nil
		}
		if isRefusal(err) {
			return fmt.Errorf("node %s cannot join the cluster: %w", n.name, err)
		}
		s.noteError(n.name, "joining", err)
		if !sleep(ctx, jitter(delay)) {
			return nil
		}
		delay = min(2*delay, s.cfg.reconnectMax)
	}
}

func (n *hollowNode) joinOnce(ctx context.Context, csr []byte) (*pb.JoinResponse, error) {
	client, err := n.sim.joinClient(ctx)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := client.Join(rctx, &pb.JoinRequest{Token: n.sim.cfg.JoinToken, Node: n.name, Csr: csr, Labels: n.sim.cfg.nodeLabels(n.index)})
	return resp, errdefs.FromGRPC(err)
}

// renewIfDue asks for a new certificate over the node's mutual-TLS
// connection once two thirds of the current one's lifetime have passed.
// The new certificate serves the connections made after it.
func (n *hollowNode) renewIfDue(ctx context.Context, client pb.AgentClient, now time.Time) {
	if !auth.NeedsRenewal(n.id.kp.Leaf(), now) || now.Before(n.renewRetry) {
		return
	}
	if err := n.renew(ctx, client); err != nil {
		n.renewRetry = now.Add(30 * time.Second)
		n.sim.noteError(n.name, "renewing its certificate", err)
	}
}

func (n *hollowNode) renew(ctx context.Context, client pb.AgentClient) error {
	csr, keyPEM, err := auth.NewRequest(n.name)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := client.RenewCertificate(rctx, &pb.RenewRequest{Csr: csr})
	if err != nil {
		return errdefs.FromGRPC(err)
	}
	nc := auth.NodeCredential{CAPEM: resp.GetCaCertificate(), CertPEM: resp.GetCertificate(), KeyPEM: keyPEM}
	if _, err := parseIdentity(nc); err != nil {
		return err
	}
	if err := auth.SaveNodeCredential(n.dir, nc); err != nil {
		return err
	}
	return n.id.kp.Set(nc.CertPEM, nc.KeyPEM)
}

// clientTLS is the node's side of its mutual-TLS connection.
func (n *hollowNode) clientTLS() credentials.TransportCredentials {
	return credentials.NewTLS(auth.MemberClientTLS(n.id.pool, n.id.kp))
}

// dial makes a connection to the control plane with creds: to the one
// server given, or to the first of several that answers, moving to
// another when it goes away. grpc.NewClient connects on first use and
// reconnects by itself, no slower than the session's own backoff.
func dial(cfg Config, creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
	target, opts := targetOf(cfg.Servers)
	return grpc.NewClient(target, append(opts,
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxRecvMsgSize)),
		grpc.WithConnectParams(connectParams(cfg)),
		// Thousands of mostly idle connections: no read buffer each (TLS
		// buffers records already); gRPC shares write buffers by default.
		grpc.WithReadBufferSize(0),
	)...)
}
