package cliclient

import (
	"strings"
	"time"

	"github.com/wasmorch/wasmorch/internal/httptrigger"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// FunctionConfig is what deploy's function flags asked for; a Route makes
// the workload an HTTP function served by the gateway.
type FunctionConfig struct {
	Route          string        // path prefix, e.g. /greet
	Host           string        // optional Host to match
	RequestTimeout time.Duration // per request; 0: the default (30s)
	MaxBody        string        // request body limit such as "1Mi"; empty: the default (10Mi)
	Concurrency    int           // concurrent requests per replica; 0: the default (100)
	Queue          int           // requests held per replica when saturated; 0: the default (100)
	// Replica bounds for the autoscaler; with both 0 there are none.
	MinReplicas int
	MaxReplicas int
	// Target is the requests in flight per replica the autoscaler aims
	// for (0: 10); Idle is how long without requests before it scales
	// down to the minimum (0: 5m).
	Target int
	Idle   time.Duration
	// HealthPath, under the route, is what the worker requests of each
	// replica every HealthInterval (0: 2s); a replica gets traffic once it
	// answers 2xx or 3xx (rollouts).
	HealthPath     string
	HealthInterval time.Duration
}

// trigger checks the function flags and builds the spec's trigger and
// autoscale bounds, adjusting replicas into the bounds; all nil without a
// route.
func (cfg DeployConfig) trigger(replicas int32) (*wasmorchv1.HttpTrigger, *wasmorchv1.Autoscale, int32, error) {
	f := cfg.Function
	if f.Route == "" {
		for flag, set := range map[string]bool{
			"--host": f.Host != "", "--request-timeout": f.RequestTimeout != 0, "--max-body": f.MaxBody != "",
			"--concurrency": f.Concurrency != 0, "--queue": f.Queue != 0,
			"--min-replicas": f.MinReplicas != 0, "--max-replicas": f.MaxReplicas != 0,
			"--target-concurrency": f.Target != 0, "--idle": f.Idle != 0,
			"--health-path": f.HealthPath != "", "--health-interval": f.HealthInterval != 0,
		} {
			if set {
				return nil, nil, 0, Errorf("add --route /PATH to deploy an HTTP function", "%s is only for HTTP functions", flag)
			}
		}
		return nil, nil, replicas, nil
	}
	if !strings.HasPrefix(f.Route, "/") {
		return nil, nil, 0, Errorf("e.g. --route /greet", "invalid --route %q: a route is a path prefix starting with '/'", f.Route)
	}
	if f.RequestTimeout < 0 || f.RequestTimeout%time.Millisecond != 0 {
		return nil, nil, 0, Errorf("e.g. --request-timeout 10s", "invalid --request-timeout %s: use whole milliseconds, 0 or more", f.RequestTimeout)
	}
	maxBody, err := ParseMemory(f.MaxBody)
	if err != nil {
		return nil, nil, 0, Errorf("use bytes or a unit, e.g. 64Ki, 1Mi", "invalid --max-body: %v", err)
	}
	if f.Concurrency < 0 || f.Queue < 0 {
		return nil, nil, 0, Errorf("use 1 or more, or 0 for the default", "invalid --concurrency %d or --queue %d", f.Concurrency, f.Queue)
	}
	if f.HealthInterval < 0 || f.HealthInterval%time.Millisecond != 0 {
		return nil, nil, 0, Errorf("e.g. --health-interval 2s", "invalid --health-interval %s: use whole milliseconds", f.HealthInterval)
	}
	trig := &wasmorchv1.HttpTrigger{
		Route:            f.Route,
		Host:             strings.ToLower(f.Host),
		TimeoutMs:        f.RequestTimeout.Milliseconds(),
		MaxBodyBytes:     maxBody,
		Concurrency:      int32(f.Concurrency),
		Queue:            int32(f.Queue),
		HealthPath:       f.HealthPath,
		HealthIntervalMs: f.HealthInterval.Milliseconds(),
	}
	if err := httptrigger.Validate(trig); err != nil {
		return nil, nil, 0, Errorf("see 'wasmorch deploy --help'", "invalid function flags: %v", err)
	}
	if f.Target < 0 || f.Idle < 0 || f.Idle%time.Millisecond != 0 {
		return nil, nil, 0, Errorf("e.g. --target-concurrency 10 --idle 5m", "invalid --target-concurrency %d or --idle %s", f.Target, f.Idle)
	}
	if f.MinReplicas == 0 && f.MaxReplicas == 0 {
		if f.Target != 0 || f.Idle != 0 {
			return nil, nil, 0, Errorf("add --max-replicas N", "--target-concurrency and --idle need autoscaling bounds")
		}
		return trig, nil, replicas, nil
	}
	lo, hi := f.MinReplicas, f.MaxReplicas
	if hi == 0 {
		hi = max(lo, int(replicas))
	}
	if lo < 0 || hi < 1 || lo > hi {
		return nil, nil, 0, Errorf("e.g. --min-replicas 0 --max-replicas 10", "invalid replica bounds %d..%d: need 0 <= min <= max and max >= 1", lo, hi)
	}
	replicas = min(max(replicas, int32(lo)), int32(hi))
	return trig, &wasmorchv1.Autoscale{MinReplicas: int32(lo), MaxReplicas: int32(hi), TargetConcurrency: int32(f.Target), IdleMs: f.Idle.Milliseconds()}, replicas, nil
}
