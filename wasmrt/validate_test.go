package wasmrt

import (
	"context"
	"slices"
	"testing"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name    string
		wasm    []byte
		wantErr string
	}{
		{name: "a C command is valid", wasm: readTestModule(t, "hello.wasm")},
		{name: "a Go command is valid", wasm: readTestModule(t, "gohello.wasm")},
		{name: "unknown imports are not rejected", wasm: readTestModule(t, "badimport.wasm")},
		{name: "random bytes are rejected", wasm: readTestModule(t, "garbage.wasm"),
			wantErr: "invalid module: invalid magic number"},
		{name: "a truncated module is rejected", wasm: readTestModule(t, "truncated.wasm"),
			wantErr: "invalid module: section code: read 47-th code segment: read body: unexpected EOF"},
		{name: "an empty file is rejected", wasm: nil, wantErr: "invalid module: invalid magic number"},
		{name: "a module without _start is rejected", wasm: []byte("\x00asm\x01\x00\x00\x00"),
			wantErr: "not a WASI command module: no _start export"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Validate(context.Background(), tt.wasm)
			if got := errString(err); got != tt.wantErr {
				t.Fatalf("Validate() = %q, want %q", got, tt.wantErr)
			}
			if err != nil && !errdefs.IsInvalidArgument(err) {
				t.Errorf("Validate() error %v is not InvalidArgument", err)
			}
		})
	}
}

func TestImports(t *testing.T) {
	tests := []struct {
		module string
		want   []string
	}{
		{module: "badimport.wasm", want: []string{"env.does_not_exist"}},
		{module: "ticker.wasm", want: []string{
			"wasi_snapshot_preview1.fd_write", "wasi_snapshot_preview1.poll_oneoff", "wasi_snapshot_preview1.proc_exit",
		}},
		{module: "loop.wasm", want: nil},
	}
	for _, tt := range tests {
		t.Run(tt.module, func(t *testing.T) {
			got, err := Imports(context.Background(), readTestModule(t, tt.module))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Imports() = %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := Imports(context.Background(), readTestModule(t, "garbage.wasm")); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Imports(garbage) error = %v, want InvalidArgument", err)
	}
}
