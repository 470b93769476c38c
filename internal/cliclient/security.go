package cliclient

import (
	"context"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/cliout"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// LabelNode sets and removes labels of a node (an admin's say, which the
// node's registrations keep).
func (c *Client) LabelNode(ctx context.Context, node string, set map[string]string, remove []string) (cliout.Node, error) {
	nv, err := call(ctx, c, "", c.api.LabelNode, &wasmorchv1.LabelNodeRequest{Name: node, Set: set, Remove: remove})
	if err != nil {
		return cliout.Node{}, nodeFailure(err, node)
	}
	return cliout.NodeFrom(nv), nil
}

// CredentialInfo is an admin credential as listed.
type CredentialInfo struct {
	Serial  string    `json:"serial"`
	Name    string    `json:"name"`
	Issued  time.Time `json:"issued"`
	Expires time.Time `json:"expires"`
	Revoked time.Time `json:"revoked,omitzero"`
	Reason  string    `json:"reason,omitempty"`
}

func credentialInfo(r *wasmorchv1.CertificateRecord) CredentialInfo {
	ci := CredentialInfo{Serial: r.GetSerial(), Name: r.GetName(), Issued: time.Unix(0, r.GetIssuedUnixNano()), Expires: time.Unix(0, r.GetExpiresUnixNano()), Reason: r.GetReason()}
	if r.GetRevokedUnixNano() != 0 {
		ci.Revoked = time.Unix(0, r.GetRevokedUnixNano())
	}
	return ci
}

// IssueCredential has the cluster sign an admin credential named name for
// a key made here, and returns the credential (server left empty) and
// what was issued.
func (c *Client) IssueCredential(ctx context.Context, name string, ttl time.Duration) (auth.Credential, CredentialInfo, error) {
	csr, keyPEM, err := auth.NewRequest(name)
	if err != nil {
		return auth.Credential{}, CredentialInfo{}, err
	}
	resp, err := call(ctx, c, "", c.api.IssueCredential, &wasmorchv1.IssueCredentialRequest{Name: name, Csr: csr, TtlSeconds: int64(ttl / time.Second)})
	if err != nil {
		return auth.Credential{}, CredentialInfo{}, err
	}
	return auth.Credential{CA: string(resp.GetCaCertificate()), Cert: string(resp.GetCertificate()), Key: string(keyPEM)}, credentialInfo(resp.GetInfo()), nil
}

// ListCredentials lists the admin credentials not yet expired, revoked
// ones included.
func (c *Client) ListCredentials(ctx context.Context) ([]CredentialInfo, error) {
	resp, err := call(ctx, c, "", c.api.ListCredentials, &wasmorchv1.ListCredentialsRequest{})
	if err != nil {
		return nil, err
	}
	out := make([]CredentialInfo, 0, len(resp.GetCredentials()))
	for _, r := range resp.GetCredentials() {
		out = append(out, credentialInfo(r))
	}
	return out, nil
}

// RevokeCredential puts a credential's serial on the cluster's
// revocation list.
func (c *Client) RevokeCredential(ctx context.Context, serial, reason string) (CredentialInfo, error) {
	resp, err := call(ctx, c, "", c.api.RevokeCredential, &wasmorchv1.RevokeCredentialRequest{Serial: serial, Reason: reason})
	if err != nil {
		return CredentialInfo{}, err
	}
	return credentialInfo(resp.GetRevoked()), nil
}
