package wasmrt

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

func TestUnsupported(t *testing.T) {
	ctx := context.Background()
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("..", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name string
		wasm []byte
		want string // substring of the reason; "" = runs here
	}{
		{"a WASI preview 1 command runs", read("hello.wasm"), ""},
		{"an import the runtime lacks", read("badimport.wasm"), "is not provided by the wasm runtime"},
		{"a component", append(append([]byte{}, componentPreamble...), 0x01, 0x00), "WebAssembly component"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			why, err := Unsupported(ctx, tc.wasm)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "" && why != "" || !strings.Contains(why, tc.want) {
				t.Errorf("Unsupported = %q, want %q", why, tc.want)
			}
		})
	}
	if _, err := Unsupported(ctx, []byte("not wasm")); !errdefs.IsInvalidArgument(err) {
		t.Errorf("Unsupported(garbage) error = %v, want InvalidArgument", err)
	}
}
