package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/funcserver"
)

// TestFunctionRollingUpdateUnderLoad updates a function's spec (a new
// generation: new replicas start, the old ones stop once they are ready)
// while clients keep calling it, half of them with a small POST body that
// the gateway must replay when a replica it picked has just stopped: no
// request fails, whether the gateway calls the worker in its process or
// over HTTP.
func TestFunctionRollingUpdateUnderLoad(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts options
	}{{"up", options{}}, {"http", options{functionsOverHTTP: true}}} {
		t.Run(tt.name, func(t *testing.T) { testRollingUpdateUnderLoad(t, tt.opts) })
	}
}

func testRollingUpdateUnderLoad(t *testing.T, opts options) {
	a := start(t, opts)
	spec := func(greeting string) *v1.WorkloadSpec {
		return &v1.WorkloadSpec{Kind: "wasm", Replicas: 2, Http: &v1.HttpTrigger{Route: "/greet"},
			Env: []*v1.EnvVar{{Name: "GREETING", Value: greeting}}}
	}
	a.deployFunction(t, "greet", "greet.wasm", "/greet", func(s *v1.WorkloadSpec) {
		s.Replicas, s.Env = 2, spec("v1").Env
	})

	const clients, maxPerClient = 4, 20000 // bounds the load loop
	var ok, sawV2 atomic.Int64
	var mu sync.Mutex
	var failures []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range maxPerClient {
				select {
				case <-stop:
					return
				default:
				}
				var resp *http.Response
				var err error
				if i%2 == 0 {
					resp, err = http.Get("http://" + a.http + "/greet?who=load")
				} else {
					resp, err = http.Post("http://"+a.http+"/greet?who=load", "text/plain", strings.NewReader("a small body"))
				}
				var body []byte
				if err == nil {
					body, _ = io.ReadAll(resp.Body)
					_ = resp.Body.Close()
				}
				switch {
				case err != nil:
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
				case resp.StatusCode != 200:
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%d %s", resp.StatusCode, body))
					mu.Unlock()
				default:
					ok.Add(1)
					if strings.HasPrefix(string(body), "v2,") {
						sawV2.Add(1)
					}
				}
			}
		}()
	}
	a.deploy(t, "greet", "greet.wasm", spec("v2"))
	a.waitFor(t, "the rollout to generation 2", func() (bool, string) {
		is := a.instances(t, "greet")
		if len(is) != 2 {
			return false, describe(is)
		}
		for _, iv := range is {
			if iv.GetInstance().GetGeneration() != 2 || iv.GetState() != v1.InstanceState_INSTANCE_STATE_RUNNING {
				return false, describe(is)
			}
		}
		return sawV2.Load() > 0, describe(is)
	})
	close(stop)
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed during the rollout; first: %s", len(failures), int64(len(failures))+ok.Load(), failures[0])
	}
	// An old replica may answer a moment after the rollout is recorded
	// done (its worker drains it), never long after.
	a.waitFor(t, "only v2 answering after the rollout", func() (bool, string) {
		resp, err := http.Get("http://" + a.http + "/greet?who=after")
		if err != nil {
			return false, err.Error()
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		return string(body) == "v2, after!\n", fmt.Sprintf("%d %q", resp.StatusCode, body)
	})
}

// TestFunctionColdStartServesBeforeAReplica: a request for a function
// scaled to zero is answered by the worker that ran it, without a replica
// (a cold replica prepared from the compile cache), with the gateway
// calling the worker directly (`up`) or over HTTP (as across processes);
// the replica count is raised beside it, so that a real replica follows.
// The function's timeout holds on that path too.
func TestFunctionColdStartServesBeforeAReplica(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts options
	}{{"up", options{}}, {"http", options{functionsOverHTTP: true}}} {
		t.Run(tt.name, func(t *testing.T) {
			a := start(t, tt.opts)
			a.deployFunction(t, "lazy", "greet.wasm", "/lazy", func(s *v1.WorkloadSpec) {
				s.Autoscale = &v1.Autoscale{MinReplicas: 0, MaxReplicas: 2, IdleMs: time.Hour.Milliseconds()}
				s.Env = []*v1.EnvVar{{Name: "GREETING", Value: "cold"}}
			})
			funcs := a.worker.FunctionHandler().(*funcserver.Server)
			a.scaleToZero(t, "lazy")
			before := funcs.ColdRequests()

			resp, err := http.Get("http://" + a.http + "/lazy?who=ana")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(body), "cold, ana!") {
				t.Fatalf("cold request: %s %q", resp.Status, body)
			}
			if n := funcs.ColdRequests() - before; n != 1 {
				t.Errorf("%d requests served cold after one request at zero, want 1", n)
			}
			a.waitFor(t, "a replica after the cold start", func() (bool, string) {
				wl, err := a.control.GetWorkload(context.Background(), &v1.GetWorkloadRequest{Name: "lazy"})
				return err == nil && wl.GetWorkload().GetSpec().GetReplicas() == 1 && wl.GetReady() == 1, wl.String()
			})

			// A function that loops forever, at zero from the start: the
			// cold path stops it at its timeout.
			a.deploy(t, "spin", "loop.wasm", &v1.WorkloadSpec{Kind: "wasm", Replicas: 0,
				Http:      &v1.HttpTrigger{Route: "/spin", TimeoutMs: 300},
				Autoscale: &v1.Autoscale{MinReplicas: 0, MaxReplicas: 1, IdleMs: time.Hour.Milliseconds()}})
			a.waitFor(t, "spin routed", func() (bool, string) {
				resp, err := http.Get("http://" + a.http + "/spin")
				if err != nil {
					return false, err.Error()
				}
				_ = resp.Body.Close()
				return resp.StatusCode == http.StatusGatewayTimeout, resp.Status
			})
		})
	}
}
