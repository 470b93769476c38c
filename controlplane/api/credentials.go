package api

import (
	"context"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/controlplane/certrecords"
	"github.com/wasmorch/wasmorch/controlplane/store"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Admin credentials: each is a certificate of the cluster CA with role
// admin, issued by a member to its own admin.yaml or, through
// IssueCredential, to a key an admin made; recorded while valid, and
// revocable by serial (the revocation list of controlplane/certrecords).

// IssueCredential signs an admin certificate for the key of the request.
func (a *controlAPI) IssueCredential(ctx context.Context, req *v1.IssueCredentialRequest) (*v1.IssueCredentialResponse, error) {
	name := req.GetName()
	if name == "" {
		name = "admin"
	}
	if req.GetTtlSeconds() < 0 {
		return nil, errdefs.Invalidf("credential lifetime %ds is negative", req.GetTtlSeconds())
	}
	id := auth.Identity{Role: auth.RoleAdmin, Name: name}
	certPEM, err := a.s.sec.ca.SignRequestFor(req.GetCsr(), id, time.Now(), time.Duration(req.GetTtlSeconds())*time.Second)
	if err != nil {
		return nil, err
	}
	rec, err := certrecords.New(certPEM, id, "")
	if err != nil {
		return nil, err
	}
	if err := a.s.recordIssued(ctx, rec); err != nil {
		return nil, err
	}
	a.s.log.Info("issued an admin credential", "name", name, "serial", rec.GetSerial())
	return &v1.IssueCredentialResponse{Certificate: certPEM, CaCertificate: a.s.sec.ca.CertPEM, Info: rec}, nil
}

// ListCredentials lists the admin credentials that are valid or revoked
// and not yet expired, oldest first.
func (a *controlAPI) ListCredentials(ctx context.Context, _ *v1.ListCredentialsRequest) (*v1.ListCredentialsResponse, error) {
	cli := a.s.store.Client
	issued, err := cli.Get(ctx, store.CertsPrefix+string(auth.RoleAdmin)+"/", clientv3.WithPrefix())
	if err != nil {
		return nil, errdefs.Unavailablef("list credentials: %v", err)
	}
	revoked, err := cli.Get(ctx, store.RevokedPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, errdefs.Unavailablef("list credentials: %v", err)
	}
	out := &v1.ListCredentialsResponse{}
	now := time.Now().UnixNano()
	for _, kv := range append(issued.Kvs, revoked.Kvs...) {
		if rec := certrecords.Decode(kv.Value); rec != nil && rec.GetRole() == string(auth.RoleAdmin) && rec.GetExpiresUnixNano() > now {
			out.Credentials = append(out.Credentials, rec)
		}
	}
	sort.Slice(out.Credentials, func(i, j int) bool {
		return out.Credentials[i].GetIssuedUnixNano() < out.Credentials[j].GetIssuedUnixNano()
	})
	return out, nil
}

// RevokeCredential puts an admin credential's serial on the revocation
// list: every member refuses it from then on, and ends its streams. A
// member whose own admin.yaml it was writes a new one. A serial the
// cluster has no record of (issued before records were kept) is revoked
// for the longest lifetime a certificate of the CA can have.
func (a *controlAPI) RevokeCredential(ctx context.Context, req *v1.RevokeCredentialRequest) (*v1.RevokeCredentialResponse, error) {
	serial := req.GetSerial()
	if serial == "" || !isDecimal(serial) {
		return nil, errdefs.Invalidf("serial %q is not a certificate serial number (decimal digits, as 'wasmorch credentials list' shows them)", serial)
	}
	cli := a.s.store.Client
	resp, err := cli.Get(ctx, store.CertsPrefix, clientv3.WithPrefix())
	if err != nil {
		return nil, errdefs.Unavailablef("read certificates: %v", err)
	}
	var rec *v1.CertificateRecord
	var key string
	for _, kv := range resp.Kvs {
		if r := certrecords.Decode(kv.Value); r != nil && r.GetSerial() == serial {
			rec, key = r, string(kv.Key)
		}
	}
	switch {
	case rec == nil:
		life := max(a.s.sec.ca.LifetimeFor(auth.RoleAdmin), auth.CertLifetime)
		rec = &v1.CertificateRecord{Serial: serial, ExpiresUnixNano: time.Now().Add(life).UnixNano()}
	case rec.GetRole() == string(auth.RoleNode):
		return nil, errdefs.Preconditionf("serial %s is a certificate of node %s: remove the node instead ('wasmorch node rm %s'), which revokes every certificate it holds", serial, rec.GetName(), rec.GetName())
	}
	reason := req.GetReason()
	if reason == "" {
		reason = "revoked by an admin ('wasmorch credentials revoke')"
	}
	op, err := certrecords.RevokedOp(ctx, cli, rec, reason)
	if err != nil {
		return nil, err
	}
	ops := []clientv3.Op{op}
	if key != "" {
		ops = append(ops, clientv3.OpDelete(key))
	}
	if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return nil, errdefs.Unavailablef("revoke credential %s: %v", serial, err)
	}
	a.s.log.Info("revoked a credential", "serial", serial, "name", rec.GetName(), "reason", reason)
	out := certrecords.Decode(op.ValueBytes())
	return &v1.RevokeCredentialResponse{Revoked: out}, nil
}

func isDecimal(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return len(s) <= 40
}
