package cliclient

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/registry"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Registries (docs/registry.md): `push FILE REF` pushes a module to a
// registry from here; `deploy oci://REF` (and module:/image: oci://REF
// in a manifest) has the control plane pull it; `registry login` stores
// what the control plane needs to reach a registry.

// reference is the oci:// reference cfg deploys, or "". A module written
// REGISTRY/REPO@sha256:... that is no file is a reference too.
func (cfg DeployConfig) reference() string {
	for _, s := range []string{cfg.File, cfg.Image} {
		if registry.IsReference(s) {
			return s
		}
	}
	if f := cfg.File; strings.Contains(f, "@sha256:") && strings.Contains(f, "/") {
		if _, err := os.Stat(f); errors.Is(err, fs.ErrNotExist) {
			return registry.Scheme + f
		}
	}
	return ""
}

// pullSource has the control plane pull ref and completes spec with what
// it stored: the module or image archive, where it came from and the
// digest the reference resolved to.
func (c *Client) pullSource(ctx context.Context, ref string, timeout time.Duration, spec *wasmorchv1.WorkloadSpec) error {
	resp, err := c.Pull(ctx, ref, timeout)
	if err != nil {
		return err
	}
	spec.ModuleDigest, spec.ModuleSize = resp.GetBlobDigest(), resp.GetBlobSize()
	spec.SourceReference, spec.SourceDigest = ref, resp.GetDigest()
	spec.Kind = "wasm"
	if resp.GetKind() == registry.KindContainer {
		spec.Kind = kindContainer
	}
	return nil
}

// Pull has the control plane pull ref into its blob store; timeout is
// what ctx allows, for the message when the registry does not answer.
func (c *Client) Pull(ctx context.Context, ref string, timeout time.Duration) (*wasmorchv1.PullReferenceResponse, error) {
	if _, err := registry.Parse(ref, false); err != nil {
		return nil, &Error{What: err.Error(), Hint: "e.g. oci://registry.example.com/team/app:1.0", Cause: errdefs.ErrInvalidArgument}
	}
	if err := c.connect(ctx); err != nil {
		return nil, err
	}
	resp, err := c.api.PullReference(ctx, &wasmorchv1.PullReferenceRequest{Reference: ref})
	if err == nil {
		return resp, nil
	}
	host := registry.Host(ref)
	code := status.Code(err)
	switch {
	case code == codes.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded):
		if _, _, unreachable := c.dials.unreachable(); unreachable {
			return nil, c.failure(err, "")
		}
		within := "in time"
		if timeout > 0 {
			within = "within " + timeout.String()
		}
		return nil, &Error{
			What:  fmt.Sprintf("%s: %s did not answer %s", ref, host, within),
			Hint:  "check that the registry is up, or raise --timeout",
			Cause: errors.Join(errdefs.ErrUnavailable, err),
		}
	case code == codes.NotFound:
		cat := errdefs.FromGRPC(err)
		return nil, &Error{What: OneLine(cat.Error()), Hint: "check the reference, or push it with 'wasmorch push FILE " + strings.TrimPrefix(ref, registry.Scheme) + "'", Cause: cat}
	case code == codes.InvalidArgument, code == codes.FailedPrecondition:
		// The server's message names the reference and what to do.
		cat := errdefs.FromGRPC(err)
		return nil, &Error{What: OneLine(cat.Error()), Cause: cat}
	case code == codes.Unavailable && strings.HasPrefix(status.Convert(err).Message(), ref+":"):
		cat := errdefs.FromGRPC(err)
		return nil, &Error{What: OneLine(cat.Error()), Hint: "deploy again once it answers; running instances are not affected", Cause: cat}
	}
	return nil, c.failure(err, "")
}

// PushConfig is what `wasmorch push` was asked to do.
type PushConfig struct {
	File      string // the .wasm module
	Reference string // REGISTRY/REPO:TAG, with or without oci://
	// Username and Password log in to the registry; without them push
	// uses the docker config.json's credentials ($DOCKER_CONFIG or
	// ~/.docker), as docker push does.
	Username, Password string
	CAFile             string // PEM certificates to trust for the registry
	PlainHTTP          bool   // allow plain HTTP to it
	Timeout            time.Duration
}

// Push validates the module and pushes it as an OCI Wasm artifact; it
// returns the manifest's digest. It speaks to the registry only.
func Push(ctx context.Context, cfg PushConfig) (string, error) {
	ref, err := registry.Parse(cfg.Reference, cfg.PlainHTTP)
	if err != nil {
		return "", &Error{What: err.Error(), Hint: "e.g. 'wasmorch push app.wasm registry.example.com/team/app:1.0'", Cause: errdefs.ErrInvalidArgument}
	}
	if cfg.Password != "" && cfg.Username == "" {
		return "", Errorf("pass --username with --password-stdin", "a password without a username")
	}
	wasm, err := readModule(ctx, cfg.File, false)
	if err != nil {
		return "", err
	}
	s := registry.Settings{Username: cfg.Username, Password: cfg.Password, PlainHTTP: cfg.PlainHTTP}
	if s.CA, err = readCA(cfg.CAFile); err != nil {
		return "", err
	}
	if cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Timeout)
		defer cancel()
	}
	host := ref.Context().RegistryStr()
	digest, err := registry.Push(ctx, wasm, ref, s, authn.DefaultKeychain)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && cfg.Timeout > 0 {
			return "", &Error{What: fmt.Sprintf("push %s: %s did not answer within %s", cfg.Reference, host, cfg.Timeout), Hint: "check that the registry is up, or raise --timeout", Cause: err}
		}
		e := &Error{What: "push " + OneLine(registry.Explain(cfg.Reference, host, s, registry.PushFix, err).Error()), Cause: err}
		if !strings.Contains(e.What, "; ") {
			e.Hint = "check that the registry is up and try again"
		}
		return "", e
	}
	return digest, nil
}

func readCA(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, readError(path, err)
	}
	if !strings.Contains(string(b), "-----BEGIN CERTIFICATE-----") {
		return nil, Errorf("give the registry's CA certificate in PEM", "--ca-file %s holds no PEM certificate", path)
	}
	return b, nil
}

// LoginConfig is what `wasmorch registry login` was asked to store.
type LoginConfig struct {
	Host string // REGISTRY[:PORT]
	// Username and Password, or, with FromDocker, the credentials the
	// docker config.json holds for Host; neither: anonymous.
	Username, Password string
	FromDocker         bool
	CAFile             string
	PlainHTTP          bool
}

// RegistryLogin stores cfg as the cluster's settings for its registry, in
// a secret (encrypted at rest); it returns the secret's name.
func (c *Client) RegistryLogin(ctx context.Context, cfg LoginConfig) (string, error) {
	host, err := registryHost(cfg.Host)
	if err != nil {
		return "", err
	}
	s := registry.Settings{Username: cfg.Username, Password: cfg.Password, PlainHTTP: cfg.PlainHTTP}
	if cfg.FromDocker {
		if cfg.Username != "" || cfg.Password != "" {
			return "", Errorf("drop --username/--password-stdin, or drop --docker-config", "--docker-config takes the credentials from docker's config.json")
		}
		reg, err := name.NewRegistry(host)
		if err != nil {
			return "", Errorf("give REGISTRY[:PORT]", "%q is not a registry host: %v", host, err)
		}
		a, err := authn.DefaultKeychain.Resolve(reg)
		if err != nil {
			return "", Errorf("check $DOCKER_CONFIG or ~/.docker/config.json", "cannot read docker's credentials for %s: %v", host, err)
		}
		ac, err := a.Authorization()
		if err != nil || ac.Username == "" && ac.Password == "" {
			return "", Errorf("run 'docker login "+host+"' first, or pass --username and --password-stdin", "docker's config.json holds no credentials for %s", host)
		}
		s.Username, s.Password = ac.Username, ac.Password
	}
	if s.Password != "" && s.Username == "" {
		return "", Errorf("pass --username with --password-stdin", "a password without a username")
	}
	if s.CA, err = readCA(cfg.CAFile); err != nil {
		return "", err
	}
	name := registry.SecretName(host)
	if _, err := c.SetSecret(ctx, name, s.Data(host), false); err != nil {
		return "", err
	}
	return name, nil
}

// RegistryLogout removes the cluster's settings for host.
func (c *Client) RegistryLogout(ctx context.Context, host string) error {
	h, err := registryHost(host)
	if err != nil {
		return err
	}
	err = c.DeleteSecret(ctx, registry.SecretName(h))
	var ue *Error
	if errors.As(err, &ue) && errdefs.IsNotFound(err) {
		return &Error{What: fmt.Sprintf("no registry login for %s", host), Hint: "see 'wasmorch registry list'", Cause: err}
	}
	return err
}

// registryHost checks a registry's host[:port] and spells it as
// references do ("docker.io" is "index.docker.io").
func registryHost(s string) (string, error) {
	host := strings.TrimPrefix(s, registry.Scheme)
	if host == "" || strings.ContainsAny(host, "/@") || registry.Host(host+"/x") == "" {
		return "", Errorf("e.g. 'wasmorch registry login registry.example.com:5000 --username ci --password-stdin'", "%q is not a registry host[:port]", s)
	}
	return registry.Host(host + "/x"), nil
}

// RegistryLogins lists the secrets that hold registry settings.
func (c *Client) RegistryLogins(ctx context.Context) ([]*wasmorchv1.SecretView, error) {
	all, err := c.ListSecrets(ctx)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(s *wasmorchv1.SecretView) bool { return !strings.HasPrefix(s.GetName(), registry.SecretPrefix) }), nil
}
