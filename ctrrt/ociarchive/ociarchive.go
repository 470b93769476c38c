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

// dockerManifestFile is the index of an archive in Docker's own format,
// which 'docker save' wrote before Docker 25 (manifest.json, <id>/layer.tar
// and no oci-layout); from 25 on it writes both formats in one archive.
const dockerManifestFile = "manifest.json"

// ErrDockerArchive is Inspect's error for an archive in Docker's own
// format: FromDocker converts one.
var ErrDockerArchive = errors.New("a Docker image archive (manifest.json, no oci-layout), not an OCI image layout archive")

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

// maxMetadataBytes bounds each JSON document an archive is checked by
// (oci-layout, index.json, an index, a manifest, an image config): only
// these are read into memory, layers are hashed as they stream past.
const maxMetadataBytes = 4 << 20

// Inspect checks that data is a complete OCI image layout archive: an
// oci-layout file, an index.json naming at least one image manifest, and
// every blob those reference present with the digest and size they are
// referenced by. Its errors name the first thing that is wrong.
func Inspect(data []byte) (Info, error) {
	return InspectAt(bytes.NewReader(data), int64(len(data)))
}

// InspectAt is Inspect of the size bytes of an archive read through r (a
// file): it reads the archive once, hashing each file as it goes, and
// then only the JSON documents it checks, so its memory does not grow
// with the archive.
func InspectAt(r io.ReaderAt, size int64) (Info, error) {
	files, err := scanTar(r, size)
	if err != nil {
		return Info{}, err
	}
	a := &archive{r: r, files: files, info: Info{Size: size}}
	if _, ok := files[ocispec.ImageLayoutFile]; !ok {
		if _, docker := files[dockerManifestFile]; docker {
			return Info{}, ErrDockerArchive
		}
		return Info{}, errors.New("not an OCI image layout archive: no oci-layout file (save the image with 'docker save' or 'skopeo copy ... oci-archive:FILE')")
	}
	layout, err := a.read(ocispec.ImageLayoutFile)
	if err != nil {
		return Info{}, err
	}
	var l ocispec.ImageLayout
	if err := json.Unmarshal(layout, &l); err != nil || l.Version == "" {
		return Info{}, fmt.Errorf("oci-layout is not a valid image layout file (want {\"imageLayoutVersion\": \"1.0.0\"})")
	}
	if _, ok := files[ocispec.ImageIndexFile]; !ok {
		return Info{}, errors.New("OCI image layout archive has no index.json")
	}
	raw, err := a.read(ocispec.ImageIndexFile)
	if err != nil {
		return Info{}, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(raw, &idx); err != nil {
		return Info{}, fmt.Errorf("index.json is not valid JSON: %v", err)
	}
	if err := a.walkIndex("index.json", idx, 0); err != nil {
		return Info{}, err
	}
	if a.info.Manifests == 0 {
		return Info{}, errors.New("index.json names no image manifest")
	}
	return a.info, nil
}

// entry is a regular file of the archive: where its bytes are and their
// sha256.
type entry struct {
	off, size int64
	sha256    digest.Digest
}

type archive struct {
	r     io.ReaderAt
	files map[string]entry
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
		switch d.MediaType {
		case ocispec.MediaTypeImageIndex, "application/vnd.docker.distribution.manifest.list.v2+json":
			b, err := a.blob(where, d)
			if err != nil {
				return err
			}
			var sub ocispec.Index
			if err := json.Unmarshal(b, &sub); err != nil {
				return fmt.Errorf("index %s is not valid JSON: %v", d.Digest, err)
			}
			if err := a.walkIndex("index "+d.Digest.String(), sub, depth+1); err != nil {
				return err
			}
		case ocispec.MediaTypeImageManifest, "application/vnd.docker.distribution.manifest.v2+json":
			b, err := a.blob(where, d)
			if err != nil {
				return err
			}
			if err := a.checkManifest(d, b); err != nil {
				return err
			}
		default:
			// Attestations, signatures and other artifacts: not an image,
			// but present and intact.
			if _, err := a.check(where, d); err != nil {
				return err
			}
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
		if _, err := a.check(where, l); err != nil {
			return err
		}
	}
	a.info.Manifests++
	if img.OS != "" {
		a.info.Platforms = append(a.info.Platforms, img.OS+"/"+img.Architecture)
	}
	return nil
}

// check verifies that the blob d names is present with d's size and
// digest, and returns its entry.
func (a *archive) check(where string, d ocispec.Descriptor) (entry, error) {
	if err := d.Digest.Validate(); err != nil {
		return entry{}, fmt.Errorf("%s references an invalid digest %q: %v", where, d.Digest, err)
	}
	name := path.Join(ocispec.ImageBlobsDir, d.Digest.Algorithm().String(), d.Digest.Encoded())
	e, ok := a.files[name]
	if !ok {
		return entry{}, fmt.Errorf("%s references %s, which the archive lacks (%s)", where, d.Digest, name)
	}
	if e.size != d.Size {
		return entry{}, fmt.Errorf("blob %s is %d bytes, but %s says %d", d.Digest, e.size, where, d.Size)
	}
	got := e.sha256
	if d.Digest.Algorithm() != digest.SHA256 {
		var err error
		if got, err = d.Digest.Algorithm().FromReader(io.NewSectionReader(a.r, e.off, e.size)); err != nil {
			return entry{}, fmt.Errorf("blob %s: %v", d.Digest, err)
		}
	}
	if got != d.Digest {
		return entry{}, fmt.Errorf("blob %s is corrupt: its bytes hash to %s", d.Digest, got)
	}
	return e, nil
}

// blob returns the verified bytes of a JSON document d names.
func (a *archive) blob(where string, d ocispec.Descriptor) ([]byte, error) {
	e, err := a.check(where, d)
	if err != nil {
		return nil, err
	}
	if e.size > maxMetadataBytes {
		return nil, fmt.Errorf("%s %s is %d bytes, more than the %d a JSON document of an image may have", d.MediaType, d.Digest, e.size, maxMetadataBytes)
	}
	return a.bytes(e)
}

// read returns the bytes of a file named in the archive (oci-layout,
// index.json).
func (a *archive) read(name string) ([]byte, error) {
	e := a.files[name]
	if e.size > maxMetadataBytes {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d it may have", name, e.size, maxMetadataBytes)
	}
	return a.bytes(e)
}

func (a *archive) bytes(e entry) ([]byte, error) {
	b := make([]byte, e.size)
	if _, err := a.r.ReadAt(b, e.off); err != nil && !(errors.Is(err, io.EOF) && e.size == 0) {
		return nil, fmt.Errorf("reading the archive: %v", err)
	}
	return b, nil
}

// scanTar reads the archive once and returns its regular files by
// cleaned name: where each one's bytes are, and their sha256.
func scanTar(r io.ReaderAt, size int64) (map[string]entry, error) {
	files := map[string]entry{}
	cr := &countingReader{r: io.NewSectionReader(r, 0, size)}
	tr := tar.NewReader(cr)
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
		off := cr.n // archive/tar reads no further than the entry's header
		sum := digest.SHA256.Digester()
		n, err := io.Copy(sum.Hash(), tr)
		if err != nil {
			return nil, fmt.Errorf("tar entry %s is truncated: %v", h.Name, err)
		}
		if cr.n-off != n {
			return nil, fmt.Errorf("tar entry %s is a sparse file, which an image archive does not hold", h.Name)
		}
		files[strings.TrimPrefix(path.Clean("/"+h.Name), "/")] = entry{off: off, size: n, sha256: sum.Digest()}
	}
	if len(files) == 0 {
		return nil, errors.New("not an OCI image layout archive: the tar holds no files")
	}
	return files, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
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
