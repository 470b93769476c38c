// Package ociarchive reads and writes OCI image layout archives: the tar of
// an OCI image layout (oci-layout, index.json, blobs/sha256/...) that
// `docker save`, `ctr export` and `skopeo copy oci-archive:` produce. The
// CLI and the control plane use Inspect to refuse a corrupt archive before it
// is stored; Write builds small single-layer images (tests, tools) without a
// registry or a build daemon.
package ociarchive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// MediaType is the media type of an OCI image layout archive, as blobs of
// container workloads are uploaded.
const MediaType = "application/vnd.oci.image.layout.v1+tar"

// maxIndexDepth bounds nested indexes, so that a cyclic archive is refused.
const maxIndexDepth = 4

// LooksLike reports whether head, the first bytes of a file, starts a tar
// archive (POSIX ustar or GNU magic at offset 257). It decides which
// validation a file gets; Inspect then says precisely what is wrong.
func LooksLike(head []byte) bool {
	const magicOff = 257
	if len(head) < magicOff+5 {
		return false
	}
	return string(head[magicOff:magicOff+5]) == "ustar"
}

// Info is what Inspect learned about an archive.
type Info struct {
	Manifests int      // image manifests reachable from index.json
	Platforms []string // "os/arch" of each manifest whose config says
	Size      int64    // bytes of the archive
}

// Inspect checks that data is a complete OCI image layout archive: an
// oci-layout file, an index.json naming at least one image manifest, and
// every blob those reference present with the digest and size they are
// referenced by. Its errors name the first thing that is wrong.
func Inspect(data []byte) (Info, error) {
	files, err := readTar(data)
	if err != nil {
		return Info{}, err
	}
	layout, ok := files[ocispec.ImageLayoutFile]
	if !ok {
		return Info{}, errors.New("not an OCI image layout archive: no oci-layout file (save the image with 'docker save' or 'skopeo copy ... oci-archive:FILE')")
	}
	var l ocispec.ImageLayout
	if err := json.Unmarshal(layout, &l); err != nil || l.Version == "" {
		return Info{}, fmt.Errorf("oci-layout is not a valid image layout file (want {\"imageLayoutVersion\": \"1.0.0\"})")
	}
	raw, ok := files[ocispec.ImageIndexFile]
	if !ok {
		return Info{}, errors.New("OCI image layout archive has no index.json")
	}
	var idx ocispec.Index
	if err := json.Unmarshal(raw, &idx); err != nil {
		return Info{}, fmt.Errorf("index.json is not valid JSON: %v", err)
	}
	a := &archive{files: files, info: Info{Size: int64(len(data))}}
	if err := a.walkIndex("index.json", idx, 0); err != nil {
		return Info{}, err
	}
	if a.info.Manifests == 0 {
		return Info{}, errors.New("index.json names no image manifest")
	}
	return a.info, nil
}

type archive struct {
	files map[string][]byte
	info  Info
}

func (a *archive) walkIndex(where string, idx ocispec.Index, depth int) error {
	if idx.SchemaVersion != 2 {
		return fmt.Errorf("%s: schemaVersion %d is not 2", where, idx.SchemaVersion)
	}
	if depth > maxIndexDepth {
		return fmt.Errorf("%s: indexes nested more than %d deep", where, maxIndexDepth)
	}
	for _, d := range idx.Manifests {
		b, err := a.blob(where, d)
		if err != nil {
			return err
		}
		switch d.MediaType {
		case ocispec.MediaTypeImageIndex, "application/vnd.docker.distribution.manifest.list.v2+json":
			var sub ocispec.Index
			if err := json.Unmarshal(b, &sub); err != nil {
				return fmt.Errorf("index %s is not valid JSON: %v", d.Digest, err)
			}
			if err := a.walkIndex("index "+d.Digest.String(), sub, depth+1); err != nil {
				return err
			}
		case ocispec.MediaTypeImageManifest, "application/vnd.docker.distribution.manifest.v2+json":
			if err := a.checkManifest(d, b); err != nil {
				return err
			}
		default:
			// Attestations, signatures and other artifacts: not an image,
			// but present and intact, which blob checked.
		}
	}
	return nil
}

func (a *archive) checkManifest(d ocispec.Descriptor, b []byte) error {
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("manifest %s is not valid JSON: %v", d.Digest, err)
	}
	where := "manifest " + d.Digest.String()
	cfg, err := a.blob(where, m.Config)
	if err != nil {
		return err
	}
	var img ocispec.Image
	if err := json.Unmarshal(cfg, &img); err != nil {
		return fmt.Errorf("image config %s is not valid JSON: %v", m.Config.Digest, err)
	}
	if len(m.Layers) == 0 {
		return fmt.Errorf("%s has no layers", where)
	}
	for _, l := range m.Layers {
		if _, err := a.blob(where, l); err != nil {
			return err
		}
	}
	a.info.Manifests++
	if img.OS != "" {
		a.info.Platforms = append(a.info.Platforms, img.OS+"/"+img.Architecture)
	}
	return nil
}

// blob returns the verified bytes d names.
func (a *archive) blob(where string, d ocispec.Descriptor) ([]byte, error) {
	if err := d.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("%s references an invalid digest %q: %v", where, d.Digest, err)
	}
	name := path.Join(ocispec.ImageBlobsDir, d.Digest.Algorithm().String(), d.Digest.Encoded())
	b, ok := a.files[name]
	if !ok {
		return nil, fmt.Errorf("%s references %s, which the archive lacks (%s)", where, d.Digest, name)
	}
	if int64(len(b)) != d.Size {
		return nil, fmt.Errorf("blob %s is %d bytes, but %s says %d", d.Digest, len(b), where, d.Size)
	}
	if got := d.Digest.Algorithm().FromBytes(b); got != d.Digest {
		return nil, fmt.Errorf("blob %s is corrupt: its bytes hash to %s", d.Digest, got)
	}
	return b, nil
}

// readTar returns the archive's regular files by cleaned name.
func readTar(data []byte) (map[string][]byte, error) {
	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("not a readable tar archive: %v", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("tar entry %s is truncated: %v", h.Name, err)
		}
		files[strings.TrimPrefix(path.Clean("/"+h.Name), "/")] = b
	}
	if len(files) == 0 {
		return nil, errors.New("not an OCI image layout archive: the tar holds no files")
	}
	return files, nil
}

// File is one file of an image's single layer.
type File struct {
	Path string // absolute in the image, e.g. "/app"
	Mode int64  // permission bits, e.g. 0o755
	Data []byte
}

// Image describes a single-layer image for Write.
type Image struct {
	Files      []File
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string // the user the entrypoint runs as ("uid:gid"); empty: root
	OS         string // default "linux"
	Arch       string // default "amd64"
	RefName    string // org.opencontainers.image.ref.name; optional
}

// Write writes img as an OCI image layout archive to w: one uncompressed
// layer holding img.Files, its config, a manifest and index.json.
func Write(w io.Writer, img Image) error {
	if img.OS == "" {
		img.OS = "linux"
	}
	if img.Arch == "" {
		img.Arch = "amd64"
	}
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	for _, f := range img.Files {
		name := strings.TrimPrefix(path.Clean("/"+f.Path), "/")
		if name == "" {
			return fmt.Errorf("image file %q has no name", f.Path)
		}
		if err := lw.WriteHeader(&tar.Header{Name: name, Mode: f.Mode, Size: int64(len(f.Data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := lw.Write(f.Data); err != nil {
			return err
		}
	}
	if err := lw.Close(); err != nil {
		return err
	}
	layerDesc := descriptor(ocispec.MediaTypeImageLayer, layer.Bytes())
	cfg, err := json.Marshal(ocispec.Image{
		Platform: ocispec.Platform{OS: img.OS, Architecture: img.Arch},
		Config:   ocispec.ImageConfig{Entrypoint: img.Entrypoint, Cmd: img.Cmd, Env: img.Env, User: img.User},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layerDesc.Digest}},
	})
	if err != nil {
		return err
	}
	cfgDesc := descriptor(ocispec.MediaTypeImageConfig, cfg)
	man, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    cfgDesc,
		Layers:    []ocispec.Descriptor{layerDesc},
	})
	if err != nil {
		return err
	}
	manDesc := descriptor(ocispec.MediaTypeImageManifest, man)
	manDesc.Platform = &ocispec.Platform{OS: img.OS, Architecture: img.Arch}
	if img.RefName != "" {
		manDesc.Annotations = map[string]string{ocispec.AnnotationRefName: img.RefName}
	}
	idx, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{manDesc},
	})
	if err != nil {
		return err
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	put := func(name string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	blob := func(b []byte) error {
		sum := sha256.Sum256(b)
		return put(path.Join(ocispec.ImageBlobsDir, "sha256", hex.EncodeToString(sum[:])), b)
	}
	for _, step := range []func() error{
		func() error { return put(ocispec.ImageLayoutFile, layout) },
		func() error { return blob(layer.Bytes()) },
		func() error { return blob(cfg) },
		func() error { return blob(man) },
		func() error { return put(ocispec.ImageIndexFile, idx) },
	} {
		if err := step(); err != nil {
			return err
		}
	}
	return tw.Close()
}

func descriptor(mediaType string, b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
}
