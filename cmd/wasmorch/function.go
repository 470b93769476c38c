package main

import (
	"github.com/spf13/pflag"

	"github.com/wasmorch/wasmorch/internal/cliclient"
)

// addFunctionFlags adds deploy's flags for HTTP functions.
func addFunctionFlags(f *pflag.FlagSet, fn *cliclient.FunctionConfig) {
	f.StringVar(&fn.Route, "route", "", "serve the module as an HTTP function at this path prefix of the gateway, e.g. /greet (CGI over WASI)")
	f.StringVar(&fn.Host, "host", "", "with --route: only requests for this Host")
	f.DurationVar(&fn.RequestTimeout, "request-timeout", 0, "with --route: stop a request's sandbox and answer 504 after this long (default 30s)")
	f.StringVar(&fn.MaxBody, "max-body", "", "with --route: request body limit, e.g. 64Ki, 1Mi (default 10Mi); larger bodies get 413")
	f.IntVar(&fn.Concurrency, "concurrency", 0, "with --route: requests each replica runs at once (default 100)")
	f.IntVar(&fn.Queue, "queue", 0, "with --route: requests each replica holds when all run; beyond that 503 (default 100)")
	f.IntVar(&fn.MinReplicas, "min-replicas", 0, "with --route: fewest replicas the autoscaler keeps; 0 scales to zero when idle (a request brings one back)")
	f.IntVar(&fn.MaxReplicas, "max-replicas", 0, "with --route: most replicas the autoscaler runs (enables autoscaling)")
	f.IntVar(&fn.Target, "target-concurrency", 0, "with --max-replicas: requests in flight per replica the autoscaler aims for (default 10)")
	f.DurationVar(&fn.Idle, "idle", 0, "with --max-replicas: scale down to --min-replicas (0: to zero) after this long without requests (default 5m)")
	f.StringVar(&fn.HealthPath, "health-path", "", "with --route: a path under the route (e.g. /healthz) each replica must answer 2xx or 3xx before it gets traffic, checked every --health-interval")
	f.DurationVar(&fn.HealthInterval, "health-interval", 0, "with --health-path: how often each replica is checked (default 2s); 3 failures in a row take it out of rotation")
	commandLineOnly(f, "route", "host", "request-timeout", "max-body", "concurrency", "queue", "min-replicas", "max-replicas", "target-concurrency", "idle", "health-path", "health-interval")
}
