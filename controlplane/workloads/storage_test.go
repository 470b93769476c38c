package workloads

import (
	"strings"
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func TestValidateScratch(t *testing.T) {
	const digest = "sha256:0000000000000000000000000000000000000000000000000000000000000000"
	tests := []struct {
		spec *v1.WorkloadSpec
		want string // "" = valid
	}{
		{&v1.WorkloadSpec{ModuleDigest: digest, ScratchBytes: 64 << 20}, ""},
		{&v1.WorkloadSpec{ModuleDigest: digest, ScratchBytes: -1}, "scratch space of -1 bytes is outside 1 byte .. 1Ti"},
		{&v1.WorkloadSpec{ModuleDigest: digest, ScratchBytes: 2 << 40}, "outside 1 byte .. 1Ti"},
		{&v1.WorkloadSpec{Kind: KindContainer, Image: "team/app:1", ScratchBytes: 1 << 20}, "scratch space is for wasm workloads"},
		{&v1.WorkloadSpec{ModuleDigest: digest, Http: &v1.HttpTrigger{Route: "/f"}, ScratchBytes: 1 << 20}, "a function's sandbox lives for one request"},
	}
	for _, tc := range tests {
		err := Validate(tc.spec)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%v: %v", tc.spec, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%v: got %v, want %q", tc.spec, err, tc.want)
		}
	}
}
