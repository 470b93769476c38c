package ociarchive

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func image(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	err := Write(&buf, Image{
		Files:      []File{{Path: "/app", Mode: 0o755, Data: []byte("#!/bin/true\n")}},
		Entrypoint: []string{"/app"},
		Arch:       "arm64",
	})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rewrite copies a tar archive, letting edit change or drop (nil) each
// file's bytes.
func rewrite(t *testing.T, data []byte, edit func(name string, b []byte) []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		if b = edit(h.Name, b); b == nil {
			continue
		}
		h.Size = int64(len(b))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestWriteThenInspect(t *testing.T) {
	data := image(t)
	if !LooksLike(data) {
		t.Error("LooksLike(an archive Write made) = false")
	}
	info, err := Inspect(data)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if info.Manifests != 1 || len(info.Platforms) != 1 || info.Platforms[0] != "linux/arm64" || info.Size != int64(len(data)) {
		t.Errorf("Info = %+v", info)
	}
}

func TestInspectRefuses(t *testing.T) {
	good := image(t)
	isBlob := func(name string) bool { return strings.HasPrefix(name, "blobs/sha256/") }
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"not a tar", []byte(strings.Repeat("x", 2048)), "not a readable tar archive"},
		{"an empty tar", rewrite(t, good, func(string, []byte) []byte { return nil }), "holds no files"},
		{"no oci-layout", rewrite(t, good, func(n string, b []byte) []byte {
			if n == "oci-layout" {
				return nil
			}
			return b
		}), "no oci-layout file"},
		{"no index.json", rewrite(t, good, func(n string, b []byte) []byte {
			if n == "index.json" {
				return nil
			}
			return b
		}), "has no index.json"},
		{"index.json not JSON", rewrite(t, good, func(n string, b []byte) []byte {
			if n == "index.json" {
				return []byte("{")
			}
			return b
		}), "index.json is not valid JSON"},
		{"a blob missing", rewrite(t, good, func(n string, b []byte) []byte {
			if isBlob(n) && bytes.Contains(b, []byte("layers")) && bytes.Contains(b, []byte("config")) {
				return nil // the manifest
			}
			return b
		}), "which the archive lacks"},
		{"a blob corrupt", rewrite(t, good, func(n string, b []byte) []byte {
			if isBlob(n) && bytes.Contains(b, []byte("#!/bin/true")) {
				c := bytes.Clone(b)
				c[len(c)-1] ^= 0xff
				return c
			}
			return b
		}), "is corrupt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Inspect(tc.data)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Inspect = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestLooksLike(t *testing.T) {
	if LooksLike([]byte("\x00asm\x01\x00\x00\x00")) {
		t.Error("a wasm header looks like a tar archive")
	}
	if LooksLike(nil) {
		t.Error("nothing looks like a tar archive")
	}
}
