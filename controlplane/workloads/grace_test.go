package workloads

import (
	"testing"
	"time"
)

func TestNodeGrace(t *testing.T) {
	const def = 2 * time.Second
	for _, tc := range []struct {
		labels map[string]string
		want   time.Duration
	}{
		{nil, def},
		{map[string]string{"zone": "a"}, def},
		{map[string]string{LostAfterLabel: "5m"}, 5 * time.Minute},
		{map[string]string{LostAfterLabel: "1s"}, def}, // never below the cluster's
		{map[string]string{LostAfterLabel: "forever"}, def},
		{map[string]string{LostAfterLabel: "48h"}, def},
	} {
		if got := NodeGrace(tc.labels, def); got != tc.want {
			t.Errorf("NodeGrace(%v) = %v, want %v", tc.labels, got, tc.want)
		}
	}
	if err := ValidateLabel(LostAfterLabel, "1h30m"); err != nil {
		t.Errorf("ValidateLabel(%s=1h30m) = %v", LostAfterLabel, err)
	}
	if err := ValidateLabel(LostAfterLabel, "90"); err == nil {
		t.Errorf("ValidateLabel(%s=90) accepted a number without a unit", LostAfterLabel)
	}
}
