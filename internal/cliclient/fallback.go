package cliclient

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"

	"github.com/wasmorch/wasmorch/internal/manifest"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/wasmrt"
)

// `deploy app.wasm --fallback-image REF|IMAGE-oci.tar` gives a module a
// fallback: an image reference each node pulls, or an OCI image archive
// uploaded beside the module, run as a container where the module cannot
// run as Wasm. `--port N` is the port an HTTP container listens on.

// readFallback checks the fallback and port flags against the rest of the
// spec and completes spec with them. It returns the fallback image archive
// to upload, or nil for an image reference or no fallback.
func readFallback(cfg DeployConfig, spec *wasmorchv1.WorkloadSpec) ([]byte, error) {
	if err := readService(cfg, spec); err != nil { // service.go
		return nil, err
	}
	if cfg.FallbackImage == "" {
		return nil, nil
	}
	if spec.Kind == kindContainer {
		return nil, Errorf("drop --fallback-image: a container workload runs its image everywhere", "--fallback-image is for wasm modules")
	}
	if _, err := os.Stat(cfg.FallbackImage); errors.Is(err, fs.ErrNotExist) {
		if manifest.IsDigest(cfg.FallbackImage) {
			spec.FallbackArchiveDigest = cfg.FallbackImage // an archive uploaded already
		} else {
			spec.FallbackImage = cfg.FallbackImage
		}
		return nil, nil
	}
	archive, err := isArchive(cfg.FallbackImage)
	if err != nil {
		return nil, err
	}
	if !archive {
		return nil, Errorf("give an OCI image archive (docker save, skopeo copy ... oci-archive:FILE) or an image reference",
			"--fallback-image %s is a file but not an OCI image archive", cfg.FallbackImage)
	}
	b, err := readArchive(cfg.FallbackImage)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	spec.FallbackArchiveDigest = "sha256:" + hex.EncodeToString(sum[:])
	return b, nil
}

// validateModule checks a module locally before anything is sent. A
// component (WASI preview 2) cannot run as Wasm here but is accepted with
// a fallback image, which then runs everywhere.
func validateModule(ctx context.Context, wasm []byte, hasFallback bool) error {
	if hasFallback && wasmrt.IsComponent(wasm) {
		return nil
	}
	return wasmrt.Validate(ctx, wasm)
}
