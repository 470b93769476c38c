package workloads

import (
	"math"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/wasmorch/wasmorch/internal/canary"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/resources"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// DefaultMaxSurge and DefaultMaxUnavailable are Kubernetes' defaults.
const (
	DefaultMaxSurge       = "25%"
	DefaultMaxUnavailable = "25%"
)

// parseIntOrPercent checks a max surge / max unavailable value: a count
// ("2") or a percentage ("25%"); "" is the default.
func parseIntOrPercent(s string) (n int, percent bool, err error) {
	num, pct := strings.CutSuffix(s, "%")
	n, err = strconv.Atoi(num)
	if err != nil || n < 0 || pct && n > 100 || strings.HasPrefix(num, "+") {
		return 0, false, errdefs.Invalidf("%q is neither a count (like 2) nor a percentage (like 25%%)", s)
	}
	return n, pct, nil
}

// scaled resolves s against replicas, rounding a percentage up or down.
func scaled(s, def string, replicas int, roundUp bool) int {
	if s == "" {
		s = def
	}
	n, pct, err := parseIntOrPercent(s)
	if err != nil {
		n, pct, _ = parseIntOrPercent(def) // validated at apply; never here
	}
	if !pct {
		return n
	}
	v := float64(n) * float64(replicas) / 100
	if roundUp {
		return int(math.Ceil(v))
	}
	return int(math.Floor(v))
}

// RolloutBounds resolves a spec's max surge (rounded up) and max
// unavailable (rounded down) against its replicas, as Kubernetes does:
// when both come to 0, max unavailable is 1 so that a rollout can move.
// A plain TCP service (services: --tcp) never surges: an extra instance
// could not run where an old one holds the port, so that a rollout with
// no free node would wait for ever; its instances are replaced in place
// (stopped, then started again), at least one at a time, as a DaemonSet
// with host ports is.
func RolloutBounds(spec *v1.WorkloadSpec) (surge, unavailable int) {
	replicas := int(spec.GetReplicas())
	surge = scaled(spec.GetMaxSurge(), DefaultMaxSurge, replicas, true)
	unavailable = min(scaled(spec.GetMaxUnavailable(), DefaultMaxUnavailable, replicas, false), replicas)
	if resources.NodePort(spec) != 0 {
		surge = 0
	}
	if surge == 0 && unavailable == 0 {
		unavailable = 1
	}
	return surge, unavailable
}

// validateRollout checks the rollout fields of a spec.
func validateRollout(spec *v1.WorkloadSpec) error {
	surge, unavail := spec.GetMaxSurge(), spec.GetMaxUnavailable()
	for _, f := range []struct{ name, v string }{{"max surge", surge}, {"max unavailable", unavail}} {
		if f.v == "" {
			continue
		}
		if _, _, err := parseIntOrPercent(f.v); err != nil {
			return errdefs.Invalidf("%s: %v", f.name, err)
		}
	}
	isZero := func(s string) bool { n, _, _ := parseIntOrPercent(s); return s != "" && n == 0 }
	if isZero(surge) && isZero(unavail) {
		return errdefs.Invalidf("max surge and max unavailable cannot both be 0: a rollout could never move")
	}
	return nil
}

// SameRevision says whether two specs run the same thing: equal but for
// the replica count and the rollout settings.
func SameRevision(a, b *v1.WorkloadSpec) bool {
	strip := func(s *v1.WorkloadSpec) *v1.WorkloadSpec {
		if s == nil {
			return &v1.WorkloadSpec{}
		}
		s = proto.Clone(s).(*v1.WorkloadSpec)
		s.Replicas, s.MaxSurge, s.MaxUnavailable, s.Canary, s.CanaryDurationMs = 0, "", "", "", 0
		return s
	}
	return proto.Equal(strip(a), strip(b))
}

// validateCanary checks the canary fields of a spec.
func validateCanary(spec *v1.WorkloadSpec) error {
	if spec.GetCanaryDurationMs() < 0 {
		return errdefs.Invalidf("canary duration %dms is negative", spec.GetCanaryDurationMs())
	}
	if spec.GetCanary() == "" {
		if spec.GetCanaryDurationMs() > 0 {
			return errdefs.Invalidf("a canary duration needs a canary percentage (like 10%%)")
		}
		return nil
	}
	if _, err := canary.Parse(spec.GetCanary()); err != nil {
		return errdefs.Invalidf("canary: %v", err)
	}
	if spec.GetHttp() == nil {
		return errdefs.Invalidf("a canary splits an HTTP function's traffic: this workload has no HTTP route")
	}
	return nil
}
