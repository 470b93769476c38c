// Command mkoci writes an OCI image layout archive (what `docker save`
// and `skopeo copy ... oci-archive:` write, and what `wasmorch deploy
// FILE` takes) holding one static binary as the image's /app entrypoint,
// with the repository's own ociarchive package: `make tour-images` packs
// the tour's container with it, so that no Docker or registry is needed.
//
//	go run ./internal/mkoci -o bin/app-oci.tar [-arch amd64] [-name app:tour] BINARY
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"runtime"

	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
)

func main() {
	out := flag.String("o", "", "the archive to write")
	arch := flag.String("arch", runtime.GOARCH, "the image's CPU architecture (GOARCH spelling)")
	name := flag.String("name", "", "the image's ref name (org.opencontainers.image.ref.name), e.g. app:tour")
	flag.Parse()
	if err := run(*out, *arch, *name, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "mkoci:", err)
		os.Exit(1)
	}
}

func run(out, arch, name string, args []string) error {
	if out == "" || len(args) != 1 {
		return fmt.Errorf("usage: mkoci -o ARCHIVE [-arch ARCH] [-name REF] BINARY")
	}
	bin, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := ociarchive.Write(&buf, ociarchive.Image{
		Files:      []ociarchive.File{{Path: "/app", Mode: 0o755, Data: bin}},
		Entrypoint: []string{"/app"},
		Env:        []string{"PATH=/"},
		Arch:       arch,
		RefName:    name,
	}); err != nil {
		return err
	}
	if _, err := ociarchive.Inspect(buf.Bytes()); err != nil {
		return fmt.Errorf("the archive written does not read back: %w", err)
	}
	return os.WriteFile(out, buf.Bytes(), 0o644)
}
