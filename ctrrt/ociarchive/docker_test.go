package ociarchive_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/internal/ctrtest"
)

const program = "#!/bin/true\n"

func opener(b []byte) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}

// legacyArchive is an archive as 'docker save' wrote them before Docker
// 25, of an image whose /app is program.
func legacyArchive(t *testing.T) []byte {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(bin, []byte(program), 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(ctrtest.DockerArchive(t, bin, "team/app:1.0"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// registryToolArchive is an archive in Docker's format as
// go-containerregistry's tarball.Write writes it (gzip-compressed layers
// named by digest), as crane and other registry tools do.
func registryToolArchive(t *testing.T, tags ...string) []byte {
	t.Helper()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	if err := tw.WriteHeader(&tar.Header{Name: "app", Mode: 0o755, Size: int64(len(program)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(program)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := tarball.LayerFromOpener(opener(layer.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	img, err = mutate.ConfigFile(img, &v1.ConfigFile{OS: "linux", Architecture: runtime.GOARCH,
		Config: v1.Config{Entrypoint: []string{"/app"}}, RootFS: v1.RootFS{Type: "layers", DiffIDs: mustDiffIDs(t, img)}})
	if err != nil {
		t.Fatal(err)
	}
	refs := map[name.Tag]v1.Image{mustTag(t, tags[0]): img}
	if len(tags) > 1 { // a second image, with another entrypoint
		second, err := mutate.Config(img, v1.Config{Entrypoint: []string{"/other"}})
		if err != nil {
			t.Fatal(err)
		}
		refs[mustTag(t, tags[1])] = second
	}
	var out bytes.Buffer
	if err := tarball.MultiWrite(refs, &out); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func mustTag(t *testing.T, s string) name.Tag {
	t.Helper()
	tag, err := name.NewTag(s)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

func mustDiffIDs(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cfg.RootFS.DiffIDs
}

// layerFiles returns the files of the converted archive's image's layers
// (gzip-compressed tars, as the manifest says), by name.
func layerFiles(t *testing.T, archive []byte) map[string]string {
	t.Helper()
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
	var idx ocispec.Index
	if err := json.Unmarshal(files["index.json"], &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("index.json = %s, %v", files["index.json"], err)
	}
	blob := func(d ocispec.Descriptor) []byte { return files["blobs/sha256/"+d.Digest.Encoded()] }
	var man ocispec.Manifest
	if err := json.Unmarshal(blob(idx.Manifests[0]), &man); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range man.Layers {
		zr, err := gzip.NewReader(bytes.NewReader(blob(l)))
		if err != nil {
			t.Fatalf("layer %s (%s) is not gzip: %v", l.Digest, l.MediaType, err)
		}
		lr := tar.NewReader(zr)
		for {
			h, err := lr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(lr)
			out[h.Name] = string(b)
		}
	}
	return out
}

// TestDockerArchivesConvertToOCILayout: an archive in Docker's own format
// (what 'docker save' wrote before Docker 25, and registry tools write)
// is told apart by Inspect and converts to an OCI image layout archive
// that Inspect accepts, holding the same files, the same bytes every time.
// Such archives were refused with an error that said to use docker save.
func TestDockerArchivesConvertToOCILayout(t *testing.T) {
	for name, archive := range map[string][]byte{
		"docker save before 25": legacyArchive(t),
		"tarball.Write":         registryToolArchive(t, "team/app:1.0"),
	} {
		t.Run(name, func(t *testing.T) {
			if !ociarchive.LooksLike(archive) {
				t.Fatal("LooksLike = false")
			}
			if _, err := ociarchive.Inspect(archive); !errors.Is(err, ociarchive.ErrDockerArchive) {
				t.Fatalf("Inspect = %v, want ErrDockerArchive", err)
			}
			var out bytes.Buffer
			if err := ociarchive.FromDocker(&out, opener(archive)); err != nil {
				t.Fatalf("FromDocker: %v", err)
			}
			info, err := ociarchive.Inspect(out.Bytes())
			if err != nil {
				t.Fatalf("Inspect(converted) = %v", err)
			}
			if info.Manifests != 1 || len(info.Platforms) != 1 || info.Platforms[0] != "linux/"+runtime.GOARCH {
				t.Errorf("Info = %+v", info)
			}
			if files := layerFiles(t, out.Bytes()); files["app"] != program {
				t.Errorf("the converted image's layers hold %v, want app", files)
			}
			var again bytes.Buffer
			if err := ociarchive.FromDocker(&again, opener(archive)); err != nil || !bytes.Equal(again.Bytes(), out.Bytes()) {
				t.Errorf("converting the same archive again gave other bytes (%v): its digest, and so apply's 'unchanged', would differ", err)
			}
		})
	}
}

func TestFromDockerRefuses(t *testing.T) {
	var out bytes.Buffer
	err := ociarchive.FromDocker(&out, opener(registryToolArchive(t, "team/app:1.0", "team/other:2.0")))
	if err == nil || !strings.Contains(err.Error(), "the Docker archive holds 2 images (") || !strings.Contains(err.Error(), "save one image per archive") {
		t.Errorf("FromDocker(two images) = %v", err)
	}
	err = ociarchive.FromDocker(&out, opener([]byte(strings.Repeat("x", 2048))))
	if err == nil || !strings.Contains(err.Error(), "manifest.json") {
		t.Errorf("FromDocker(not a tar) = %v", err)
	}
}
