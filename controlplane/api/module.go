package api

import (
	"context"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/wasmorch/wasmorch/wasmrt"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

const wasmPageSize = 64 * 1024

// moduleInfo is what the control plane learns from a module at upload.
type moduleInfo struct {
	minMemoryBytes int64
	unsupported    string // why the wasm runtime cannot run it ("" = it can)
	// services: whether it imports wasi_snapshot_preview1.sock_accept,
	// and so can accept connections on a listener (importsRead: this was
	// read, which it is not for a component).
	importsRead, accepts bool
}

// inspectModule validates a module with wazero's interpreter (it compiles
// quickly and validates fully) and reads its initial memory and whether
// the wasm runtime provides its imports. A component (WASI preview 2) is
// taken as it is, as a module that can run only as a fallback image.
func inspectModule(ctx context.Context, wasm []byte) (moduleInfo, error) {
	if wasmrt.IsComponent(wasm) {
		return moduleInfo{unsupported: wasmrt.ComponentUnsupported}, nil
	}
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	cm, err := rt.CompileModule(ctx, wasm)
	if err != nil {
		return moduleInfo{}, errdefs.Invalidf("invalid module: %v", err)
	}
	defer cm.Close(ctx)
	if _, ok := cm.ExportedFunctions()["_start"]; !ok {
		return moduleInfo{}, errdefs.Invalidf("not a WASI command module: no _start export")
	}
	info := moduleInfo{unsupported: wasmrt.UnresolvedImports(cm), importsRead: true}
	for _, f := range cm.ImportedFunctions() {
		if mod, name, _ := f.Import(); mod == wasi_snapshot_preview1.ModuleName && name == "sock_accept" {
			info.accepts = true
		}
	}
	for _, m := range cm.ExportedMemories() {
		info.minMemoryBytes = max(info.minMemoryBytes, int64(m.Min())*wasmPageSize)
	}
	for _, m := range cm.ImportedMemories() {
		info.minMemoryBytes = max(info.minMemoryBytes, int64(m.Min())*wasmPageSize)
	}
	if info.minMemoryBytes > 4<<30 {
		return moduleInfo{}, errdefs.Invalidf("module needs %d bytes of initial memory, over the 4 GiB a wasm32 module can address", info.minMemoryBytes)
	}
	return info, nil
}
