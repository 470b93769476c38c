package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

// Fix says what to run for a registry problem: pulls are fixed with
// 'wasmorch registry login', pushes with push's own flags.
type Fix struct {
	Credentials string // run when the registry wants other credentials
	CA          string // when its certificate is not trusted
	PlainHTTP   string // when it answers only plain HTTP
}

// PullFix is the Fix for the control plane's pulls of host.
func PullFix(host string) Fix {
	login := "run 'wasmorch registry login " + host
	return Fix{
		Credentials: login + " --username USER --password-stdin'",
		CA:          login + " --ca-file CA.pem'",
		PlainHTTP:   login + " --plain-http' to allow it",
	}
}

// PushFix is the Fix for the CLI's pushes.
var PushFix = Fix{
	Credentials: "log in with 'docker login' (push reads its config.json, also under $DOCKER_CONFIG) or pass --username and --password-stdin",
	CA:          "pass --ca-file CA.pem",
	PlainHTTP:   "pass --plain-http to allow it",
}

// Explain turns the error of a push or a pull of ref (as the user wrote
// it) into one line that names ref and says what to do, in an errdefs
// category; an error that has a category already keeps it.
func Explain(ref, host string, s Settings, fix Fix, err error) error {
	if err == nil {
		return nil
	}
	var (
		terr  *transport.Error
		uerr  x509.UnknownAuthorityError
		verr  *tls.CertificateVerificationError
		herr  x509.HostnameError
		rerr  tls.RecordHeaderError
		dnerr *net.DNSError
		nerr  net.Error
	)
	switch {
	case errors.Is(err, context.Canceled):
		return err
	case errors.Is(err, context.DeadlineExceeded):
		return errdefs.Unavailablef("%s: %s did not answer in time", ref, host)
	case errors.As(err, &terr):
		return explainStatus(ref, host, s, fix, terr)
	case errors.As(err, &uerr), errors.As(err, &herr), errors.As(err, &verr):
		return errdefs.Preconditionf("%s: %s's TLS certificate is not trusted (%s); %s", ref, host, oneLine(certProblem(err)), fix.CA)
	case errors.Is(err, syscall.ECONNREFUSED):
		return errdefs.Unavailablef("%s: %s refuses connections: is the registry running?", ref, host)
	case errors.As(err, &dnerr):
		return errdefs.Unavailablef("%s: unknown registry host %s", ref, dnerr.Name)
	case errors.As(err, &nerr) && nerr.Timeout():
		return errdefs.Unavailablef("%s: %s did not answer in time", ref, host)
	case errors.Is(err, errPlainHTTP), errors.As(err, &rerr):
		// Last: go-containerregistry tries plain HTTP beside HTTPS for a
		// loopback or private address, and reports both failures; the
		// HTTPS one, matched above, is the one to tell.
		return errdefs.Preconditionf("%s: %s does not speak HTTPS, and plain HTTP is not allowed for it; %s", ref, host, fix.PlainHTTP)
	case hasCategory(err):
		return fmt.Errorf("%s: %w", ref, err)
	}
	return errdefs.Unavailablef("%s: %s", ref, oneLine(err.Error()))
}

func explainStatus(ref, host string, s Settings, fix Fix, terr *transport.Error) error {
	code := transport.ErrorCode("")
	msg := ""
	if len(terr.Errors) > 0 {
		code, msg = terr.Errors[0].Code, terr.Errors[0].Message
	}
	switch {
	case terr.StatusCode == 401 || code == transport.UnauthorizedErrorCode:
		if s.Username == "" && s.Password == "" {
			return errdefs.Preconditionf("%s: %s wants credentials; %s", ref, host, fix.Credentials)
		}
		return errdefs.Preconditionf("%s: %s refused the credentials of %q; %s", ref, host, s.Username, fix.Credentials)
	case terr.StatusCode == 403 || code == transport.DeniedErrorCode:
		return errdefs.Preconditionf("%s: %s denies access to it (%s); %s", ref, host, orStatus(msg, terr), fix.Credentials)
	case code == transport.ManifestUnknownErrorCode:
		return errdefs.NotFoundf("%s: no such tag or digest in %s", ref, host)
	case code == transport.NameUnknownErrorCode:
		return errdefs.NotFoundf("%s: no such repository in %s", ref, host)
	case terr.StatusCode == 404:
		return errdefs.NotFoundf("%s: not found in %s (%s)", ref, host, orStatus(msg, terr))
	case code == transport.DigestInvalidErrorCode, code == transport.ManifestInvalidErrorCode, code == transport.ManifestBlobUnknownErrorCode:
		return errdefs.Invalidf("%s: %s refused it: %s", ref, host, orStatus(msg, terr))
	}
	return errdefs.Unavailablef("%s: %s answered %s", ref, host, orStatus(msg, terr))
}

func orStatus(msg string, terr *transport.Error) string {
	if msg != "" {
		return oneLine(msg)
	}
	return fmt.Sprintf("HTTP %d", terr.StatusCode)
}

// certProblem is the part of a certificate error that says what is wrong.
func certProblem(err error) string {
	var uerr x509.UnknownAuthorityError
	var herr x509.HostnameError
	switch {
	case errors.As(err, &herr):
		return herr.Error()
	case errors.As(err, &uerr):
		return uerr.Error()
	}
	return err.Error()
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func hasCategory(err error) bool {
	return errdefs.IsInvalidArgument(err) || errdefs.IsNotFound(err) || errdefs.IsFailedPrecondition(err) || errdefs.IsUnavailable(err)
}
