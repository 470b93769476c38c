package workloads

import (
	"testing"

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
