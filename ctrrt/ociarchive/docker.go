package ociarchive

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// FromDocker writes the image of an archive in Docker's own format (what
// 'docker save' wrote before Docker 25, and tools that write that format
// still do: manifest.json, each layer a tar, no oci-layout) to w as an
// OCI image layout archive, the only kind the control plane stores and
// the workers import. open opens the Docker archive; it is read several
// times. go-containerregistry's tarball package reads the archive; its
// layers are stored gzip-compressed, as a registry would serve them, and
// the same archive always converts to the same bytes.
func FromDocker(w io.Writer, open func() (io.ReadCloser, error)) error {
	m, err := tarball.LoadManifest(open)
	if err != nil {
		return fmt.Errorf("reading the Docker archive's manifest.json: %v", err)
	}
	if len(m) != 1 {
		var tags []string
		for _, d := range m {
			tags = append(tags, d.RepoTags...)
		}
		return fmt.Errorf("the Docker archive holds %d images (%s): save one image per archive", len(m), strings.Join(tags, ", "))
	}
	img, err := tarball.Image(open, nil)
	if err != nil {
		return fmt.Errorf("reading the Docker archive: %v", err)
	}
	return writeImage(w, img, "the Docker archive")
}

// FromImage writes img to w as an OCI image layout archive: its manifest,
// config and layers as they are (a registry's image pulled by
// go-containerregistry's remote package: what a registry served, checked
// against its digests as it is read). The same image always gives the
// same bytes.
func FromImage(w io.Writer, img v1.Image) error {
	return writeImage(w, img, "the image")
}

// writeImage is FromImage; what names img in errors.
func writeImage(w io.Writer, img v1.Image, what string) error {
	cfg, err := img.ConfigFile()
	if err != nil {
		return fmt.Errorf("%s's config: %v", what, err)
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return fmt.Errorf("%s's config: %v", what, err)
	}
	rawMan, err := img.RawManifest()
	if err != nil {
		return fmt.Errorf("%s's layers: %v", what, err)
	}
	man, err := img.Manifest()
	if err != nil {
		return fmt.Errorf("%s's layers: %v", what, err)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("%s's layers: %v", what, err)
	}

	manDesc := ocispec.Descriptor{MediaType: string(man.MediaType), Digest: digest.FromBytes(rawMan), Size: int64(len(rawMan)),
		Platform: &ocispec.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}}
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
	put := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: size, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := io.Copy(tw, r); err != nil {
			return fmt.Errorf("writing %s: %v", name, err)
		}
		return tw.Flush() // fails if r was shorter than size
	}
	blob := func(d digest.Digest, size int64, r io.Reader) error {
		return put(path.Join(ocispec.ImageBlobsDir, d.Algorithm().String(), d.Encoded()), size, r)
	}
	if err := put(ocispec.ImageLayoutFile, int64(len(layout)), bytes.NewReader(layout)); err != nil {
		return err
	}
	for i, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return fmt.Errorf("layer %d of %s: %v", i+1, what, err)
		}
		size, err := l.Size()
		if err != nil {
			return fmt.Errorf("layer %d of %s: %v", i+1, what, err)
		}
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("layer %d of %s: %v", i+1, what, err)
		}
		err = blob(digest.Digest(d.String()), size, rc)
		_ = rc.Close()
		if err != nil {
			return fmt.Errorf("layer %d of %s: %v", i+1, what, err)
		}
	}
	for _, b := range [][]byte{rawCfg, rawMan} {
		if err := blob(digest.FromBytes(b), int64(len(b)), bytes.NewReader(b)); err != nil {
			return err
		}
	}
	if err := put(ocispec.ImageIndexFile, int64(len(idx)), bytes.NewReader(idx)); err != nil {
		return err
	}
	return tw.Close()
}
