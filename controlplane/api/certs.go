package api

import (
	"context"
	"crypto/x509"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/controlplane/certrecords"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// checkCertificate refuses, on every call, a certificate that has expired
// since its connection was made or that is on the revocation list.
func (s *Server) checkCertificate(ctx context.Context, cert *x509.Certificate) error {
	if cert == nil {
		return nil
	}
	if now := time.Now(); now.After(cert.NotAfter) {
		return errdefs.Unauthenticatedf("the client certificate of %q expired at %s", cert.Subject.CommonName, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	rec, err := s.revoked.Lookup(ctx, auth.Serial(cert))
	if err != nil {
		return err
	}
	if rec != nil {
		return certrecords.RevokedError(rec)
	}
	return nil
}

// RevocationsChanged is closed at the next change of the revocation list
// (the member re-issues its admin credential when it is revoked).
func (s *Server) RevocationsChanged() <-chan struct{} { return s.revoked.Changed() }

// Revoked says whether the certificate serial is on the revocation list,
// as this member follows it (after its first read of the list).
func (s *Server) Revoked(ctx context.Context, serial string) (bool, error) {
	rec, err := s.revoked.Lookup(ctx, serial)
	return rec != nil, err
}

// recordIssued writes the record of a certificate just issued.
func (s *Server) recordIssued(ctx context.Context, rec *v1.CertificateRecord) error {
	op, _, err := certrecords.PutOp(ctx, s.store.Client, rec)
	if err != nil {
		return err
	}
	if _, err := s.store.Client.Txn(ctx).Then(op).Commit(); err != nil {
		return errdefs.Unavailablef("record the certificate of %s %s: %v", rec.GetRole(), rec.GetName(), err)
	}
	return nil
}
