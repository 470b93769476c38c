// Package selector parses and matches label selectors, as `get -l` and
// the list and watch calls take them: comma-separated terms that must all
// hold, in Kubernetes' equality-based syntax: "k=v" (or "k==v"), "k!=v"
// (k absent or another value), "k" (k present) and "!k" (k absent). The
// CLI parses a selector before it sends it, so that a bad one is refused
// in one line without a round trip; the API parses it again.
package selector

import (
	"fmt"
	"sort"
	"strings"
)

// op is what one term asks of a label.
type op int

const (
	opEquals op = iota
	opNotEquals
	opExists
	opNotExists
)

type term struct {
	op         op
	key, value string
}

// Selector is a parsed label selector; the zero Selector selects
// everything.
type Selector struct {
	terms []term
}

// Parse parses a selector; "" selects everything.
func Parse(s string) (Selector, error) {
	var sel Selector
	if strings.TrimSpace(s) == "" {
		return sel, nil
	}
	for _, raw := range strings.Split(s, ",") {
		t := strings.TrimSpace(raw)
		if t == "" {
			return Selector{}, fmt.Errorf("selector %q has an empty term", s)
		}
		var tm term
		switch {
		case strings.Contains(t, "!="):
			k, v, _ := strings.Cut(t, "!=")
			tm = term{op: opNotEquals, key: strings.TrimSpace(k), value: strings.TrimSpace(v)}
		case strings.Contains(t, "=="):
			k, v, _ := strings.Cut(t, "==")
			tm = term{op: opEquals, key: strings.TrimSpace(k), value: strings.TrimSpace(v)}
		case strings.Contains(t, "="):
			k, v, _ := strings.Cut(t, "=")
			tm = term{op: opEquals, key: strings.TrimSpace(k), value: strings.TrimSpace(v)}
		case strings.HasPrefix(t, "!"):
			tm = term{op: opNotExists, key: strings.TrimSpace(t[1:])}
		default:
			tm = term{op: opExists, key: t}
		}
		if err := checkKey(tm.key); err != nil {
			return Selector{}, fmt.Errorf("selector term %q: %w", t, err)
		}
		if tm.op == opEquals || tm.op == opNotEquals {
			if err := checkValue(tm.value); err != nil {
				return Selector{}, fmt.Errorf("selector term %q: %w", t, err)
			}
		}
		sel.terms = append(sel.terms, tm)
	}
	return sel, nil
}

// FromMap is the selector that asks for every label of m.
func FromMap(m map[string]string) Selector {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sel Selector
	for _, k := range keys {
		sel.terms = append(sel.terms, term{op: opEquals, key: k, value: m[k]})
	}
	return sel
}

// Empty reports whether the selector selects everything.
func (s Selector) Empty() bool { return len(s.terms) == 0 }

// Matches reports whether labels satisfy every term.
func (s Selector) Matches(labels map[string]string) bool {
	for _, t := range s.terms {
		v, ok := labels[t.key]
		switch t.op {
		case opEquals:
			if !ok || v != t.value {
				return false
			}
		case opNotEquals:
			if ok && v == t.value {
				return false
			}
		case opExists:
			if !ok {
				return false
			}
		case opNotExists:
			if ok {
				return false
			}
		}
	}
	return true
}

// String is the selector in its canonical form (terms in the order
// given, "=" for equality).
func (s Selector) String() string {
	parts := make([]string, len(s.terms))
	for i, t := range s.terms {
		switch t.op {
		case opEquals:
			parts[i] = t.key + "=" + t.value
		case opNotEquals:
			parts[i] = t.key + "!=" + t.value
		case opExists:
			parts[i] = t.key
		case opNotExists:
			parts[i] = "!" + t.key
		}
	}
	return strings.Join(parts, ",")
}

// checkKey accepts a label key as workloads.ValidateLabel does: an
// optional DNS prefix and "/", then letters, digits, '-', '_' and '.'.
func checkKey(k string) error {
	if k == "" {
		return fmt.Errorf("the label key is empty")
	}
	name := k
	if i := strings.LastIndexByte(k, '/'); i >= 0 {
		prefix := k[:i]
		name = k[i+1:]
		if prefix == "" || !allOf(prefix, "-.", false) {
			return fmt.Errorf("label key %q has an invalid prefix", k)
		}
	}
	if name == "" || len(k) > 253 || !allOf(name, "-_.", true) || !alnum(name[0]) || !alnum(name[len(name)-1]) {
		return fmt.Errorf("label key %q is not valid: use letters, digits, '-', '_' and '.', optionally after a 'prefix/'", k)
	}
	return nil
}

func checkValue(v string) error {
	if v == "" {
		return nil
	}
	if len(v) > 63 || !allOf(v, "-_.", true) || !alnum(v[0]) || !alnum(v[len(v)-1]) {
		return fmt.Errorf("label value %q is not valid: use at most 63 letters, digits, '-', '_' and '.'", v)
	}
	return nil
}

func allOf(s, extra string, upper bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || upper && c >= 'A' && c <= 'Z' || strings.IndexByte(extra, c) >= 0) {
			return false
		}
	}
	return true
}

func alnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
