package worker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// A worker's identity is a node certificate from the cluster CA, kept in
// DataDir/pki with a key that never leaves the node. The first start
// presents a join token (Config.JoinToken) once and receives the
// certificate; later starts reuse it; it is renewed over the mutual-TLS
// session at two thirds of its lifetime. Every connection to the control
// plane, and every connection a member makes to the worker's own service,
// is mutual TLS with it.

// pkiDir is where the node's credential lives under its data dir.
const pkiDir = "pki"

// identity is the node's credential in use.
type identity struct {
	pool *x509.CertPool
	kp   *auth.Keypair
}

func (w *Worker) pkiDir() string { return w.cfg.PKIDir() }

// PKIDir is where the node's credential lives: DataDir/pki.
func (c Config) PKIDir() string { return filepath.Join(c.DataDir, pkiDir) }

// loadIdentity reads the node's credential. Without a usable one (none
// yet, another node's) the worker needs a join token: it joins in Start;
// without a token it cannot run. An expired one is kept until New has read
// the set on disk (expiredIdentity decides).
func (w *Worker) loadIdentity() error {
	nc, err := auth.LoadNodeCredential(w.pkiDir())
	why := ""
	switch {
	case errors.Is(err, fs.ErrNotExist):
		why = "it has no node certificate yet"
	case err != nil:
		return fmt.Errorf("worker: node credential in %s: %w", w.pkiDir(), err)
	default:
		id, err := parseIdentity(nc)
		if err != nil {
			return fmt.Errorf("worker: node credential in %s: %w", w.pkiDir(), err)
		}
		name, err := id.kp.Identity()
		switch {
		case err != nil || name != (auth.Identity{Role: auth.RoleNode, Name: w.cfg.NodeName}):
			why = fmt.Sprintf("the certificate in %s is not node %s's", w.pkiDir(), w.cfg.NodeName)
		case !time.Now().Before(id.kp.Leaf().NotAfter):
			why = fmt.Sprintf("its certificate expired at %s", id.kp.Leaf().NotAfter.UTC().Format(time.RFC3339))
			if w.cfg.JoinToken == "" || tokenMatches(w.cfg.JoinToken, nc.CAPEM) {
				// Kept for the set on disk (New, expiredIdentity): an
				// edge agent whose certificate ran out while it was cut
				// off still runs what it ran.
				w.id, w.expired = id, why
				return nil
			}
		case w.cfg.JoinToken != "" && !tokenMatches(w.cfg.JoinToken, nc.CAPEM):
			// A token of another cluster (the control plane was set up
			// anew): the node joins that one.
			w.logger.Info("the join token is for another cluster than this node's certificate: joining again", "dir", w.pkiDir())
		default:
			w.id = id
			return nil
		}
	}
	if w.cfg.JoinToken == "" {
		return errdefs.Preconditionf("worker: node %s cannot join the cluster: %s and no join token was given (create one on the server with 'wasmorch token create' and pass it as --token)", w.cfg.NodeName, why)
	}
	return nil
}

// expiredIdentity decides, in New once the set on disk is read, what a
// node whose certificate expired does: with instances kept on disk it
// runs them with the expired credential (no control plane takes it) and,
// given a join token, joins again in the background (rejoin); without, it
// joins in Start as a node without a certificate, or cannot run without a
// token.
func (w *Worker) expiredIdentity(restored bool) error {
	if w.expired == "" {
		return nil
	}
	if !restored {
		why := w.expired
		w.id, w.expired = nil, ""
		if w.cfg.JoinToken == "" {
			return errdefs.Preconditionf("worker: node %s cannot join the cluster: %s and no join token was given (create one on the server with 'wasmorch token create --node %s' and pass it as --token)", w.cfg.NodeName, why, w.cfg.NodeName)
		}
		return nil
	}
	if w.cfg.JoinToken == "" {
		w.logger.Error("this node cannot reach the cluster: " + w.expired + "; it runs the desired set kept on disk until it is given a join token (create one on the server with 'wasmorch token create --node " + w.cfg.NodeName + "' and restart the agent with --token)")
	} else {
		w.logger.Warn("this node's certificate expired: it runs the desired set kept on disk while it joins the cluster again", "why", w.expired)
	}
	return nil
}

// certExpired says whether the node runs on an expired certificate, kept
// for the set on disk, not yet replaced by a join (rejoin).
func (w *Worker) certExpired() bool {
	w.renewMu.Lock()
	defer w.renewMu.Unlock()
	return w.expired != ""
}

// rejoin joins the cluster again with the join token for a node that runs
// its set from disk on an expired certificate, in the background: the
// certificate issued replaces the expired one in place, as a renewal does,
// and the sessions use it from their next connection. A refused token is
// logged and ends the attempt; the instances keep running.
func (w *Worker) rejoin(ctx context.Context) error {
	if !w.certExpired() || w.cfg.JoinToken == "" {
		return nil
	}
	nc, err := w.obtainCredential(ctx)
	if ctx.Err() != nil {
		return nil
	}
	if err == nil {
		err = w.installCredential(nc)
	}
	if err != nil {
		w.logger.Error("cannot join the cluster again: the node runs the desired set kept on disk, unconnected; restart the agent with a valid join token ('wasmorch token create --node "+w.cfg.NodeName+"')", "err", err)
		return nil
	}
	w.renewMu.Lock()
	w.expired = ""
	w.renewMu.Unlock()
	w.logger.Info("joined the cluster again: received this node's certificate", "expires", w.id.kp.Leaf().NotAfter)
	return nil
}

// tokenMatches says whether a join token was made by the CA in caPEM (an
// unreadable token is left to the join to report).
func tokenMatches(token string, caPEM []byte) bool {
	tok, err := auth.ParseToken(token)
	if err != nil {
		return true
	}
	ca, err := auth.ParseCertificate(caPEM)
	return err != nil || auth.PinOf(ca) == tok.CAPin
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

// join presents the join token to the servers in turn until one issues
// the node's certificate (obtainCredential), and makes it the node's.
func (w *Worker) join(ctx context.Context) error {
	nc, err := w.obtainCredential(ctx)
	if err != nil {
		return err
	}
	id, err := parseIdentity(nc)
	if err != nil {
		return err
	}
	if err := auth.SaveNodeCredential(w.pkiDir(), nc); err != nil {
		return err
	}
	w.id = id
	w.logger.Info("joined the cluster: received this node's certificate", "expires", id.kp.Leaf().NotAfter)
	return nil
}

// installCredential makes nc, a certificate renewed over the session or
// issued by a join to a node running on an expired one of the same cluster
// (the token's, checked in loadIdentity: the CA pool stays), the node's:
// saved, put in place of the one in use, and announced (renewedCh).
func (w *Worker) installCredential(nc auth.NodeCredential) error {
	if _, err := parseIdentity(nc); err != nil {
		return err
	}
	if err := auth.SaveNodeCredential(w.pkiDir(), nc); err != nil {
		return err
	}
	if err := w.id.kp.Set(nc.CertPEM, nc.KeyPEM); err != nil {
		return err
	}
	w.renewMu.Lock()
	close(w.renewed)
	w.renewed = make(chan struct{})
	w.renewMu.Unlock()
	return nil
}

// obtainCredential presents the join token to the servers in turn until
// one issues the node's certificate. Refusals (a token not valid, expired,
// for another cluster) end it; an unreachable control plane is retried.
func (w *Worker) obtainCredential(ctx context.Context) (auth.NodeCredential, error) {
	tok, err := auth.ParseToken(w.cfg.JoinToken)
	if err != nil {
		return auth.NodeCredential{}, errdefs.Unauthenticatedf("%v", err) // what to do is the same as for a token refused
	}
	csr, keyPEM, err := auth.NewRequest(w.cfg.NodeName)
	if err != nil {
		return auth.NodeCredential{}, err
	}
	delay := w.reconnectBase
	for {
		for _, addr := range w.cfg.Servers {
			resp, err := w.joinAt(ctx, addr, tok, csr)
			if ctx.Err() != nil {
				return auth.NodeCredential{}, ctx.Err()
			}
			if err == nil {
				nc := auth.NodeCredential{CAPEM: resp.GetCaCertificate(), CertPEM: resp.GetCertificate(), KeyPEM: keyPEM}
				if _, err := parseIdentity(nc); err != nil {
					return auth.NodeCredential{}, fmt.Errorf("the certificate %s issued: %w", addr, err)
				}
				return nc, nil
			}
			if errors.Is(err, auth.ErrPinMismatch) || errdefs.IsUnauthenticated(err) || errdefs.IsPermissionDenied(err) || errdefs.IsInvalidArgument(err) || errdefs.IsFailedPrecondition(err) {
				return auth.NodeCredential{}, fmt.Errorf("joining through %s: %w", addr, err)
			}
			w.logger.Warn("cannot join the cluster yet", "server", addr, "err", err)
		}
		if !sleep(ctx, realClock{}, delay) {
			return auth.NodeCredential{}, ctx.Err()
		}
		delay = min(2*delay, w.reconnectMax)
	}
}

func (w *Worker) joinAt(ctx context.Context, addr string, tok auth.Token, csr []byte) (*pb.JoinResponse, error) {
	// A handshake of its own first, so that a server whose CA is not the
	// token's is named as such rather than as a connection failure.
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: registerTimeout}, Config: auth.PinnedClientTLS(tok.CAPin)}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if errors.Is(err, auth.ErrPinMismatch) {
			return nil, fmt.Errorf("%w: %s is not the cluster this token was made for", auth.ErrPinMismatch, addr)
		}
		return nil, errdefs.Unavailablef("%v", err)
	}
	_ = conn.Close()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(auth.PinnedClientTLS(tok.CAPin))))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	rctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	resp, err := pb.NewAgentClient(cc).Join(rctx, &pb.JoinRequest{Token: w.cfg.JoinToken, Node: w.cfg.NodeName, Csr: csr, Labels: w.cfg.Labels})
	return resp, errdefs.FromGRPC(err)
}

// keepCertificate renews the node's certificate at two thirds of its
// lifetime, over the current session, until ctx ends; a failed renewal is
// retried.
func (w *Worker) keepCertificate(ctx context.Context) error {
	retry := time.Duration(0)
	for {
		if w.certExpired() {
			// Nothing to renew over: a join replaces it (rejoin).
			select {
			case <-ctx.Done():
				return nil
			case <-w.renewedCh():
			}
			continue
		}
		wait := time.Until(auth.RenewAt(w.id.kp.Leaf()))
		if retry > 0 {
			wait = retry
		}
		if !sleep(ctx, realClock{}, min(max(wait, 0), time.Hour)) {
			return nil
		}
		if !auth.NeedsRenewal(w.id.kp.Leaf(), time.Now()) {
			continue
		}
		err := w.renew(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			retry = 0
			w.logger.Info("renewed this node's certificate", "expires", w.id.kp.Leaf().NotAfter)
			continue
		}
		left := time.Until(w.id.kp.Leaf().NotAfter)
		retry = min(max(left/10, 200*time.Millisecond), 30*time.Second)
		w.logger.Warn("could not renew this node's certificate; retrying", "err", err, "expires", w.id.kp.Leaf().NotAfter)
	}
}

func (w *Worker) renew(ctx context.Context) error {
	client := w.agentClient()
	if client == nil {
		return errdefs.Unavailablef("not connected to a control plane")
	}
	csr, keyPEM, err := auth.NewRequest(w.cfg.NodeName)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, registerTimeout)
	defer cancel()
	resp, err := client.RenewCertificate(rctx, &pb.RenewRequest{Csr: csr})
	if err != nil {
		return errdefs.FromGRPC(err)
	}
	return w.installCredential(auth.NodeCredential{CAPEM: resp.GetCaCertificate(), CertPEM: resp.GetCertificate(), KeyPEM: keyPEM})
}

// renewedCh is closed when the node's certificate is next renewed.
func (w *Worker) renewedCh() <-chan struct{} {
	w.renewMu.Lock()
	defer w.renewMu.Unlock()
	return w.renewed
}

// refused ends the worker when the control plane refuses the node's
// certificate (revoked when the node was removed, or expired): the
// credential is of no more use, so it is deleted, and the agent must join
// again with a token.
func (w *Worker) refused(err error) error {
	if rerr := auth.RemoveNodeCredential(w.pkiDir()); rerr != nil {
		w.logger.Warn("could not delete the refused node credential", "dir", w.pkiDir(), "err", rerr)
	}
	return fmt.Errorf("node %s can no longer use its certificate: %w (its credential in %s is deleted: start the agent with a join token, --token, to join again)", w.cfg.NodeName, err, w.pkiDir())
}

// clientTLS is the worker's side of its connections to the control plane.
func (w *Worker) clientTLS() credentials.TransportCredentials {
	return credentials.NewTLS(auth.MemberClientTLS(w.id.pool, w.id.kp))
}

// serverTLS is the worker's own service's: members only.
func (w *Worker) serverTLS() credentials.TransportCredentials {
	return credentials.NewTLS(auth.NodeServerTLS(w.id.pool, w.id.kp))
}
