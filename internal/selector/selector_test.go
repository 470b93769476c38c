package selector

import (
	"strings"
	"testing"
)

func TestSelectorMatchesEachKindOfTerm(t *testing.T) {
	labels := map[string]string{"app": "web", "tier": "front", "canary": ""}
	for _, tc := range []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"app=web", true},
		{"app==web", true},
		{"app=api", false},
		{"app!=api", true},
		{"app!=web", false},
		{"missing!=x", true},
		{"canary", true},
		{"missing", false},
		{"!missing", true},
		{"!app", false},
		{"app=web, tier=front", true},
		{"app=web,tier=back", false},
		{"example.com/team=a", false},
	} {
		s, err := Parse(tc.sel)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.sel, err)
		}
		if got := s.Matches(labels); got != tc.want {
			t.Errorf("%q.Matches(%v) = %v, want %v", tc.sel, labels, got, tc.want)
		}
	}
}

func TestSelectorRefusesWhatDoesNotParse(t *testing.T) {
	for _, bad := range []string{"app=web,", ",", "=web", "app=we b", "app=-x", "!", "a b", "/x=1", "app=" + strings.Repeat("x", 64)} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) succeeded", bad)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("Parse(%q) error has several lines: %q", bad, err)
		}
	}
}

func TestSelectorStringIsCanonical(t *testing.T) {
	s, err := Parse(" app == web ,!old, x!=1,y")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.String(), "app=web,!old,x!=1,y"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := FromMap(map[string]string{"b": "2", "a": "1"}).String(); got != "a=1,b=2" {
		t.Errorf("FromMap String() = %q", got)
	}
}
