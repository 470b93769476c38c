package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// wasmConfig is the config of the OCI Wasm artifact layout
// (application/vnd.wasm.config.v0+json): a module, not a component, for
// WASI preview 1.
type wasmConfig struct {
	Architecture string   `json:"architecture"`
	OS           string   `json:"os"`
	LayerDigests []string `json:"layerDigests"`
}

// Push pushes wasm to ref as an OCI Wasm artifact — an OCI image manifest
// whose config is WasmConfigMediaType and whose one layer is the module,
// WasmLayerMediaType — and returns the manifest's digest. Credentials are
// s's, or else keychain's (the user's docker config.json). The same module
// always makes the same manifest, so pushing it again changes nothing.
func Push(ctx context.Context, wasm []byte, ref name.Reference, s Settings, keychain authn.Keychain) (string, error) {
	opts, err := s.options(ctx, keychain)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(wasm)
	layerDigest := "sha256:" + hex.EncodeToString(sum[:])
	cfg, err := json.Marshal(wasmConfig{Architecture: "wasm", OS: "wasip1", LayerDigests: []string{layerDigest}})
	if err != nil {
		return "", err
	}
	layer := static.NewLayer(wasm, WasmLayerMediaType)
	config := static.NewLayer(cfg, WasmConfigMediaType)
	for _, l := range []v1.Layer{config, layer} {
		if err := remote.WriteLayer(ref.Context(), l, opts...); err != nil {
			return "", err
		}
	}
	man := &v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        descriptor(WasmConfigMediaType, cfg),
		Layers:        []v1.Descriptor{descriptor(WasmLayerMediaType, wasm)},
	}
	raw, err := json.Marshal(man)
	if err != nil {
		return "", err
	}
	if err := remote.Put(ref, rawManifest(raw), opts...); err != nil {
		return "", err
	}
	d := sha256.Sum256(raw)
	return "sha256:" + hex.EncodeToString(d[:]), nil
}

func descriptor(mt types.MediaType, b []byte) v1.Descriptor {
	sum := sha256.Sum256(b)
	return v1.Descriptor{MediaType: mt, Size: int64(len(b)), Digest: v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}}
}

// rawManifest is a manifest go-containerregistry puts as it is.
type rawManifest []byte

func (m rawManifest) RawManifest() ([]byte, error)        { return m, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
