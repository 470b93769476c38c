package canary

import (
	"strings"
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func TestParseTakesPercentagesFrom1To99(t *testing.T) {
	tests := []struct {
		in      string
		want    int
		wantErr string
	}{
		{"", 0, ""},
		{"10%", 10, ""},
		{"1%", 1, ""},
		{"99%", 99, ""},
		{"0%", 0, "outside 1%..99%"},
		{"100%", 0, "outside 1%..99%"},
		{"150%", 0, "outside 1%..99%"},
		{"-5%", 0, "outside 1%..99%"},
		{"10", 0, "write it with %"},
		{"abc", 0, "not a percentage"},
		{"+10%", 0, "not a percentage"},
		{"1.5%", 0, "not a percentage"},
	}
	for _, tc := range tests {
		got, err := Parse(tc.in)
		if tc.wantErr == "" && (err != nil || got != tc.want) {
			t.Errorf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
		if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("Parse(%q) = %d, %v; want an error containing %q", tc.in, got, err, tc.wantErr)
		}
	}
}

func TestReplicasRoundUpWithinOneAndAll(t *testing.T) {
	tests := []struct{ percent, replicas, want int }{
		{25, 4, 1}, {10, 4, 1}, {30, 4, 2}, {50, 10, 5}, {99, 3, 3}, {1, 1, 1}, {10, 0, 0},
	}
	for _, tc := range tests {
		if got := Replicas(tc.percent, tc.replicas); got != tc.want {
			t.Errorf("Replicas(%d, %d) = %d, want %d", tc.percent, tc.replicas, got, tc.want)
		}
	}
}

func TestUnpromotedOnlyWithACanaryNotYetPromoted(t *testing.T) {
	wl := func(canary string, gen, promoted int64) *v1.Workload {
		return &v1.Workload{Generation: gen, PromotedGeneration: promoted, Spec: &v1.WorkloadSpec{Canary: canary}}
	}
	if !Unpromoted(wl("10%", 3, 2)) {
		t.Error("generation 3 with a canary, promoted 2: want unpromoted")
	}
	for _, w := range []*v1.Workload{wl("", 3, 2), wl("10%", 3, 3), wl("bogus", 3, 2)} {
		if Unpromoted(w) {
			t.Errorf("%v: want not unpromoted", w)
		}
	}
}
