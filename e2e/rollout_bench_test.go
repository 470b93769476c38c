package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// BenchmarkRolloutUnderLoad measures a rolling update of a function of 10
// replicas (health path /healthz, default max surge and max unavailable,
// 25 %) while 4 clients call it through the gateway without pause, with
// one `wasmorch server` and two `wasmorch agent` processes at default
// settings. Each iteration deploys a new GREETING and waits as a user's
// `deploy` does, until the rollout is done; ns/op is that time. The
// baseline, measured in the same run, is the first deploy of the same 10
// replicas on an idle cluster ("x-first-deploy" is the ratio). Failed
// requests (target 0) are every answer but 200 and every transport error.
func BenchmarkRolloutUnderLoad(b *testing.B) {
	bc := startBenchCluster(b, map[string]string{"r1": "127.0.0.7", "r2": "127.0.0.8"})
	env, api, http := bc.env, bc.api, bc.http
	ctx := context.Background()

	deploy := func(greeting string) time.Duration {
		b.Helper()
		begun := time.Now()
		r := run(b, env, "deploy", "testdata/greet.wasm", "--server", api, "--name", "web", "--route", "/web", "--replicas", "10",
			"--health-path", "/healthz", "--env", "GREETING="+greeting)
		if r.code != 0 || !strings.Contains(r.stdout, "10/10 ready") {
			b.Fatalf("deploy: %s", r)
		}
		return time.Since(begun)
	}
	baseline := deploy("v0")
	c := &cluster{http: http}
	benchWait(b, "the gateway routing /web", func() bool {
		r, err := c.do(ctx, request{path: "/web"})
		return err == nil && r.status == 200
	})

	l := c.startLoad("/web", 4)
	defer l.stop()
	b.ResetTimer()
	for i := range b.N {
		deploy(fmt.Sprintf("v%d", i+1))
	}
	b.StopTimer()
	s := l.stop()
	perRollout := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(float64(s.Failed)/float64(b.N), "failed-requests/op")
	b.ReportMetric(float64(s.OK+s.Failed)/float64(b.N), "requests/op")
	b.ReportMetric(baseline.Seconds(), "s-first-deploy")
	b.ReportMetric(float64(perRollout)/float64(baseline), "x-first-deploy")
	if s.Failed > 0 {
		b.Errorf("requests failed during the rollouts: %s", s)
	}
}
