// Package canary is the arithmetic of a canary rollout, shared by the
// controller (how many canary replicas), the gateway (how much traffic
// they get) and the CLI (what it checks and reports): the percentage a
// spec's canary field asks for, and whether a workload's newest generation
// still waits for promotion. docs/rollouts.md describes the behaviour.
package canary

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Parse reads a canary setting: a percentage of the function's traffic
// from 1% to 99%, always written with '%' so that it cannot be read as a
// replica count the way maxSurge's "1" is. "" is no canary (0).
func Parse(s string) (percent int, err error) {
	if s == "" {
		return 0, nil
	}
	num, ok := strings.CutSuffix(s, "%")
	n, err := strconv.Atoi(num)
	switch {
	case !ok || err != nil || strings.HasPrefix(num, "+"):
		return 0, fmt.Errorf("%q is not a percentage: write it with %%, e.g. 10%%", s)
	case n < 1 || n > 99:
		return 0, fmt.Errorf("%q is outside 1%%..99%%", s)
	}
	return n, nil
}

// Replicas is how many replicas of the new generation a canary of percent
// runs: percent of replicas rounded up, at least 1 and at most replicas.
func Replicas(percent, replicas int) int {
	if replicas <= 0 {
		return 0
	}
	n := int(math.Ceil(float64(percent) * float64(replicas) / 100))
	return min(max(n, 1), replicas)
}

// Unpromoted reports whether wl's generation is held as a canary: its spec
// asks for one and that generation has not been promoted. A rollout is in
// its canary phase while this holds and instances of an older generation
// remain (the first generation has none, so it never is).
func Unpromoted(wl *v1.Workload) bool {
	return Percent(wl) > 0 && wl.GetPromotedGeneration() < wl.GetGeneration()
}

// Percent is wl's canary percentage; 0 when it has none (or an invalid
// one, which the control plane refuses at apply).
func Percent(wl *v1.Workload) int {
	n, err := Parse(wl.GetSpec().GetCanary())
	if err != nil {
		return 0
	}
	return n
}
