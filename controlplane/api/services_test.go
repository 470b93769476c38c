package api

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// TestModulesThatAcceptConnections: the upload reads once whether a
// module imports sock_accept (a server does, a CGI function does not), and
// a service's apply is refused for one that does not; for a blob stored
// before that was recorded, the apply reads its import section.
func TestModulesThatAcceptConnections(t *testing.T) {
	ctx := context.Background()
	s := newTestServer(t, nil)
	for _, tc := range []struct {
		file    string
		accepts bool
	}{{"cserver.wasm", true}, {"goserver.wasm", true}, {"hello.wasm", false}, {"greet.wasm", false}} {
		wasm, err := os.ReadFile("../../testdata/" + tc.file)
		if err != nil {
			t.Fatal(err)
		}
		info, err := inspectModule(ctx, wasm)
		if err != nil || !info.importsRead || info.accepts != tc.accepts {
			t.Errorf("%s at upload: %+v, %v; want accepts %v", tc.file, info, err, tc.accepts)
		}
		spec := &v1.WorkloadSpec{Kind: "wasm", ModuleDigest: blobs.Digest(wasm), Port: 8080, Http: &v1.HttpTrigger{Route: "/s"}}
		recorded := &v1.BlobMeta{WasmImportsRead: true, WasmAcceptsConnections: info.accepts}
		// As stored by an older version: nothing recorded of its imports.
		if _, err := s.blobs.Put(ctx, spec.GetModuleDigest(), bytes.NewReader(wasm), int64(len(wasm)), blobs.Meta{MediaType: "application/wasm"}); err != nil {
			t.Fatal(err)
		}
		legacy, err := s.blobs.Stat(ctx, spec.GetModuleDigest())
		if err != nil || legacy.GetWasmImportsRead() {
			t.Fatalf("%s stored without its imports: %v, %v", tc.file, legacy, err)
		}
		for what, meta := range map[string]*v1.BlobMeta{"recorded": recorded, "read at apply": legacy} {
			err := s.checkAccepts(ctx, spec, meta)
			switch {
			case tc.accepts && err != nil:
				t.Errorf("%s (%s): %v", tc.file, what, err)
			case !tc.accepts && (!errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "does not import wasi_snapshot_preview1.sock_accept")):
				t.Errorf("%s (%s): %v; want it refused", tc.file, what, err)
			}
		}
		// Without a port, a module need not accept anything.
		if err := s.checkAccepts(ctx, &v1.WorkloadSpec{Kind: "wasm", ModuleDigest: spec.GetModuleDigest()}, recorded); err != nil {
			t.Errorf("%s without a port: %v", tc.file, err)
		}
	}
}
