package workloads

import (
	"fmt"
	"strings"
	"testing"

	"github.com/wasmorch/wasmorch/internal/errdefs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func TestValidateCanary(t *testing.T) {
	fn := &v1.HttpTrigger{Route: "/fn"}
	tests := []struct {
		spec    *v1.WorkloadSpec
		wantErr bool
	}{
		{&v1.WorkloadSpec{Http: fn, Canary: "10%", CanaryDurationMs: 60000}, false},
		{&v1.WorkloadSpec{Http: fn, Canary: "99%"}, false},
		{&v1.WorkloadSpec{}, false},
		{&v1.WorkloadSpec{Http: fn, Canary: "0%"}, true},
		{&v1.WorkloadSpec{Http: fn, Canary: "150%"}, true},
		{&v1.WorkloadSpec{Http: fn, Canary: "abc"}, true},
		{&v1.WorkloadSpec{Http: fn, Canary: "10"}, true},
		{&v1.WorkloadSpec{Canary: "10%"}, true}, // not a function
		{&v1.WorkloadSpec{Http: fn, Canary: "10%", CanaryDurationMs: -1}, true},
		{&v1.WorkloadSpec{Http: fn, CanaryDurationMs: 1000}, true}, // a duration without a canary
	}
	for _, tc := range tests {
		if err := validateCanary(tc.spec); (err != nil) != tc.wantErr {
			t.Errorf("validateCanary(%v) = %v, want an error: %v", tc.spec, err, tc.wantErr)
		}
	}
}

// TestValidateRefusesAnOversizedSpec: a spec over MaxSpecBytes (10,000
// environment variables) is refused with what to do instead; one just
// under it is accepted.
func TestValidateRefusesAnOversizedSpec(t *testing.T) {
	spec := func(vars int) *v1.WorkloadSpec {
		s := &v1.WorkloadSpec{ModuleDigest: "sha256:" + strings.Repeat("0", 64), Replicas: 10}
		for i := range vars {
			s.Env = append(s.Env, &v1.EnvVar{Name: fmt.Sprintf("VAR_%05d", i), Value: "some value"})
		}
		return s
	}
	err := Validate(spec(10000))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "more than the 128 KiB") || !strings.Contains(err.Error(), "config or secret") {
		t.Errorf("10,000 variables: %v", err)
	}
	if err := Validate(spec(3000)); err != nil {
		t.Errorf("3,000 variables: %v", err)
	}
}
