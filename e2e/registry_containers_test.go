package e2e

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/wasmorch/wasmorch/internal/ctrtest"
)

// TestRegistryContainerImage deploys a container image from a registry
// with the syntax of a module: oci://REF names an image, which runs as a
// container, and comes back after a restart while the registry is down.
func TestRegistryContainerImage(t *testing.T) {
	registryBinary(t)
	d := ctrtest.Start(t)
	reg := startRegistry(t, registryOptions{})
	ref := reg.addr + "/box:1"
	digest := pushImageArchive(t, appImage(t), ref)
	c := startUpAt(t, t.TempDir(), freeAddr(t), freeAddr(t), "--containerd-socket", d.Socket)
	c.mustRun("registry", "login", reg.addr, "--plain-http")

	c.mustRun("deploy", "oci://"+ref, "--name", "box", "--", "sleep")
	if got := c.describeSource("box"); got != "oci://"+ref+" ("+digest+")" {
		t.Errorf("describe shows source %q, want oci://%s (%s)", got, ref, digest)
	}
	insts := c.instanceDetails("box")
	if len(insts) != 1 || insts[0].State != "Running" || insts[0].Runtime != "container" {
		t.Fatalf("instances of box = %s, want one Running on the container runtime", toJSON(insts))
	}
	// A module-only flag is refused for it, naming why.
	oneLineError(t, c.run("deploy", "oci://"+ref, "--name", "box2", "--fallback-image", "x/y:1"), "--fallback-image is for wasm modules")

	reg.stop()
	first := insts[0].ID
	c.mustRun("rollout", "restart", "box")
	eventually(t, "a new container of box running, the registry down", func() (bool, string) {
		is := c.instanceDetails("box")
		return len(is) == 1 && is[0].ID != first && is[0].State == "Running" && is[0].Runtime == "container", toJSON(is)
	})
	c.mustRun("delete", "box")
}

// pushImageArchive pushes the image of an OCI image layout archive to ref
// (a plain-HTTP registry) and returns its manifest's digest.
func pushImageArchive(t *testing.T, archive, ref string) string {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		path := filepath.Join(dir, filepath.Clean("/"+h.Name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 {
		t.Fatalf("the archive's index: %v, %v", im, err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(parsed, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(d.String())
}
