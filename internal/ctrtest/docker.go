package ctrtest

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// DockerArchive packs the binary at bin, as /app and its entrypoint, into
// an archive laid out as 'docker save' wrote them before Docker 25: each
// layer an uncompressed <id>/layer.tar beside <id>/json and <id>/VERSION,
// the image config as <config sha256>.json, a manifest.json and a
// repositories file naming tag, and no oci-layout. It returns the
// archive's path.
func DockerArchive(t testing.TB, bin, tag string, env ...string) string {
	t.Helper()
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatalf("ctrtest: %v", err)
	}
	var layer bytes.Buffer
	lw := tar.NewWriter(&layer)
	if err := lw.WriteHeader(&tar.Header{Name: "app", Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	if _, err := lw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := lw.Close(); err != nil {
		t.Fatal(err)
	}
	diffID := sha256.Sum256(layer.Bytes())
	diff := "sha256:" + hex.EncodeToString(diffID[:])
	config := mustJSON(t, map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      "2024-01-02T03:04:05Z",
		"config":       map[string]any{"Entrypoint": []string{"/app"}, "Env": append([]string{"PATH=/"}, env...)},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{diff}},
		"history":      []map[string]any{{"created": "2024-01-02T03:04:05Z", "created_by": "COPY app /app"}},
	})
	configSum := sha256.Sum256(config)
	configName := hex.EncodeToString(configSum[:]) + ".json"
	// Docker's v1 layer ID: a hash of the layer's v1 config, itself
	// derived from the diff ID and the parent's ID (none here).
	idSum := sha256.Sum256([]byte(diff + "\n"))
	id := hex.EncodeToString(idSum[:])
	repo, ref := tag, "latest"
	if i := bytes.LastIndexByte([]byte(tag), ':'); i > 0 {
		repo, ref = tag[:i], tag[i+1:]
	}

	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	dir := func(name string) {
		if err := tw.WriteHeader(&tar.Header{Name: name + "/", Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
			t.Fatal(err)
		}
	}
	file := func(name string, data []byte) {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	dir(id)
	file(id+"/VERSION", []byte("1.0"))
	file(id+"/json", mustJSON(t, map[string]any{"id": id, "created": "2024-01-02T03:04:05Z", "os": "linux",
		"container_config": map[string]any{"Cmd": nil}}))
	file(id+"/layer.tar", layer.Bytes())
	file(configName, config)
	file("manifest.json", mustJSON(t, []map[string]any{{"Config": configName, "RepoTags": []string{tag}, "Layers": []string{id + "/layer.tar"}}}))
	file("repositories", mustJSON(t, map[string]map[string]string{repo: {ref: id}}))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), filepath.Base(bin)+"-docker.tar")
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatalf("ctrtest: %v", err)
	}
	return path
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
