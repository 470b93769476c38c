package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// benchClients is how many clients send requests at once in the warm
// request benchmarks (TARGETS.md's native baseline uses 8).
const benchClients = 8

// BenchmarkFunctionWarmRequest compares a request through the gateway to a
// function (a fresh sandbox per request) with a native Go handler on the
// same loopback, measured in the same run: p50 latency of one client, and
// requests per second with benchClients clients.
func BenchmarkFunctionWarmRequest(b *testing.B) {
	a := start(b, options{})
	a.deployFunction(b, "greet", "greet.wasm", "/greet")
	a.deployFunction(b, "gofn", "gofn.wasm", "/gofn")

	native := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "hi, %s!\n", r.URL.Query().Get("who"))
	}))
	defer native.Close()

	for _, tt := range []struct{ name, url string }{
		{"native-go", native.URL + "/greet?who=bench"},
		{"gateway-c", "http://" + a.http + "/greet?who=bench"},
		{"gateway-go-wasip1", "http://" + a.http + "/gofn?who=bench"},
	} {
		b.Run(tt.name, func(b *testing.B) { benchRequests(b, tt.url) })
	}
}

// benchRequests measures b.N sequential requests (for p50), then b.N
// requests from benchClients clients (for throughput).
func benchRequests(b *testing.B, url string) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: benchClients}}
	get := func() {
		resp, err := client.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("%s: %s", url, resp.Status)
		}
	}
	n := max(b.N, 200)
	for range 20 {
		get() // warm the connections and caches
	}
	b.ResetTimer()
	lat := make([]time.Duration, n)
	for i := range n {
		t0 := time.Now()
		get()
		lat[i] = time.Since(t0)
	}
	slices.Sort(lat)
	began := time.Now()
	var wg sync.WaitGroup
	per := max(n/benchClients, 50)
	for range benchClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range per {
				get()
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(lat[n/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(per*benchClients)/time.Since(began).Seconds(), "req/s")
}

// BenchmarkFunctionColdStart measures the first response of a function
// scaled to zero whose module is in the worker's compile cache: the
// gateway holds the request, raises the replica count, and answers once
// the new replica is ready.
func BenchmarkFunctionColdStart(b *testing.B) {
	a := start(b, options{})
	a.deployFunction(b, "lazy", "greet.wasm", "/lazy", func(s *v1.WorkloadSpec) {
		s.Autoscale = &v1.Autoscale{MinReplicas: 0, MaxReplicas: 1, IdleMs: time.Hour.Milliseconds()}
	})
	url := "http://" + a.http + "/lazy"
	lat := make([]time.Duration, 0, b.N)
	for range b.N {
		b.StopTimer()
		if _, err := a.control.ScaleWorkload(context.Background(), &v1.ScaleRequest{Name: "lazy", Replicas: 0}); err != nil {
			b.Fatal(err)
		}
		a.waitFor(b, "lazy at zero", func() (bool, string) {
			is := a.instances(b, "lazy")
			return len(is) == 0, describe(is)
		})
		// The gateway's table follows the instances' removal within a few
		// milliseconds; give it that, so that the timed request finds no
		// replica rather than a stopping one (which it would also survive).
		time.Sleep(100 * time.Millisecond)
		b.StartTimer()
		t0 := time.Now()
		resp, err := http.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		lat = append(lat, time.Since(t0))
		if resp.StatusCode != 200 {
			b.Fatalf("cold request: %s", resp.Status)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
}

// deployFunction deploys testdata/<module> as a function at route and waits
// until the gateway answers there with 200.
func (a *allInOne) deployFunction(tb testing.TB, name, module, route string, edit ...func(*v1.WorkloadSpec)) {
	tb.Helper()
	spec := &v1.WorkloadSpec{Kind: "wasm", Replicas: 1, Http: &v1.HttpTrigger{Route: route}}
	for _, e := range edit {
		e(spec)
	}
	a.deploy(tb, name, module, spec)
	a.waitFor(tb, name+" answering at "+route, func() (bool, string) {
		resp, err := http.Get("http://" + a.http + route)
		if err != nil {
			return false, err.Error()
		}
		_ = resp.Body.Close()
		return resp.StatusCode == 200, resp.Status
	})
}
