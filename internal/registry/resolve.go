package registry

import (
	"bytes"
	"context"
	"runtime"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

// What an artifact is.
const (
	KindWasm      = "wasm"
	KindContainer = "container"
)

// Artifact is what a reference names in its registry.
type Artifact struct {
	// Digest is the manifest's ("sha256:..."): what the reference
	// resolved to.
	Digest string
	Kind   string
	// Module is a Wasm artifact's module (KindWasm), whose digest and
	// size ModuleDigest and ModuleSize say, from the manifest; reading it
	// checks the digest.
	Module       v1.Layer
	ModuleDigest string
	ModuleSize   int64
	// Image is a container image (KindContainer), for the platform that
	// Resolve was given when the reference names an index.
	Image v1.Image
}

// DefaultPlatform is the platform an image index is resolved for: Linux
// on this machine's architecture.
func DefaultPlatform() v1.Platform { return v1.Platform{OS: "linux", Architecture: runtime.GOARCH} }

// Resolve reads what ref names: a Wasm module (the OCI Wasm artifact
// layout, or wasm-to-oci's), or a container image; anything else is an
// InvalidArgument error. Reading the manifest is all it fetches; the
// module or the image's layers are read from the Artifact.
func Resolve(ctx context.Context, ref name.Reference, s Settings, platform v1.Platform) (*Artifact, error) {
	opts, err := s.options(ctx, nil)
	if err != nil {
		return nil, err
	}
	opts = append(opts, remote.WithPlatform(platform))
	desc, err := remote.Get(ref, opts...)
	if err != nil {
		return nil, err
	}
	a := &Artifact{Digest: desc.Digest.String()}
	switch {
	case desc.MediaType.IsIndex():
		img, err := desc.Image()
		if err != nil {
			return nil, err
		}
		a.Kind, a.Image = KindContainer, img
		return a, nil
	case desc.MediaType.IsImage():
	default:
		return nil, errdefs.Invalidf("it is neither a Wasm module nor a container image: its manifest is a %s; deploy a module pushed with 'wasmorch push', or an image", desc.MediaType)
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, errdefs.Invalidf("its manifest does not parse: %v; push it again", err)
	}
	switch cfg := m.Config.MediaType; {
	case cfg == WasmConfigMediaType || cfg == legacyWasmConfigMediaType || m.ArtifactType == WasmConfigMediaType:
		if len(m.Layers) != 1 {
			return nil, errdefs.Invalidf("it is a Wasm artifact of %d layers: wasmorch runs one module, a single layer of %s; push the module with 'wasmorch push'", len(m.Layers), WasmLayerMediaType)
		}
		l := m.Layers[0]
		if l.MediaType != WasmLayerMediaType && l.MediaType != legacyWasmLayerMediaType {
			return nil, errdefs.Invalidf("it is a Wasm artifact whose layer is a %s, not %s; push the module with 'wasmorch push'", l.MediaType, WasmLayerMediaType)
		}
		layer, err := remote.Layer(ref.Context().Digest(l.Digest.String()), opts...)
		if err != nil {
			return nil, err
		}
		a.Kind, a.Module, a.ModuleDigest, a.ModuleSize = KindWasm, layer, l.Digest.String(), l.Size
	case cfg == types.OCIConfigJSON || cfg == types.DockerConfigJSON:
		img, err := desc.Image()
		if err != nil {
			return nil, err
		}
		a.Kind, a.Image = KindContainer, img
	default:
		what := string(cfg)
		if m.ArtifactType != "" {
			what = m.ArtifactType
		}
		return nil, errdefs.Invalidf("it is neither a Wasm module nor a container image: its config is a %s; deploy a module pushed with 'wasmorch push', or an image", what)
	}
	return a, nil
}
