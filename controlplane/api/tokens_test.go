package api

import (
	"maps"
	"strings"
	"testing"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

func TestGrantedLabelsGoNoFurtherThanTheToken(t *testing.T) {
	for _, tc := range []struct {
		name          string
		token, asked  map[string]string
		want          map[string]string
		refusedSaying string
	}{
		{"a plain token grants nothing", nil, nil, map[string]string{}, ""},
		{"a plain token refuses the agent's own", nil, map[string]string{"zone": "b"}, nil, "does not allow label zone=b (it allows none)"},
		{"the token's labels, asked or not", map[string]string{"zone": "a"}, nil, map[string]string{"zone": "a"}, ""},
		{"asking for the token's own value", map[string]string{"zone": "a"}, map[string]string{"zone": "a"}, map[string]string{"zone": "a"}, ""},
		{"asking for another value than the token's", map[string]string{"zone": "a"}, map[string]string{"zone": "b"}, nil, "sets label zone=a; the agent asked for zone=b"},
		{"a value left to the agent", map[string]string{"zone": "*", "tier": "edge"}, map[string]string{"zone": "d"}, map[string]string{"zone": "d", "tier": "edge"}, ""},
		{"a value left to the agent, not asked for", map[string]string{"zone": "*"}, nil, map[string]string{}, ""},
		{"a label beside the token's", map[string]string{"zone": "*"}, map[string]string{"zone": "d", "gpu": "yes"}, nil, "does not allow label gpu=yes (it allows zone=*)"},
		{"an invalid value left to the agent", map[string]string{"zone": "*"}, map[string]string{"zone": "a b"}, nil, "is not valid"},
	} {
		got, err := grantedLabels(&v1.JoinToken{Id: "tok", Labels: tc.token}, tc.asked)
		switch {
		case tc.refusedSaying != "" && (err == nil || !strings.Contains(err.Error(), tc.refusedSaying)):
			t.Errorf("%s: %v, %v; want refused saying %q", tc.name, got, err, tc.refusedSaying)
		case tc.refusedSaying == "" && (err != nil || !maps.Equal(got, tc.want)):
			t.Errorf("%s: %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
}
