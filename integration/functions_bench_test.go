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
// requests per second with benchClients clients; the ratios to the native
// handler are reported beside ("x-native-p50", "pct-native-rps"). "up"
// is the gateway calling the worker in its process (`wasmorch up`);
// "http" reaches the worker's function server over HTTP, as across
// processes.
func BenchmarkFunctionWarmRequest(b *testing.B) {
	up := start(b, options{})
	up.deployFunction(b, "greet", "greet.wasm", "/greet")
	up.deployFunction(b, "gofn", "gofn.wasm", "/gofn")
	overHTTP := start(b, options{functionsOverHTTP: true})
	overHTTP.deployFunction(b, "greet", "greet.wasm", "/greet")

	native := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "hi, %s!\n", r.URL.Query().Get("who"))
	}))
	defer native.Close()

	var base benchResult
	for _, tt := range []struct{ name, url string }{
		{"native-go", native.URL + "/greet?who=bench"},
		{"gateway-c-up", "http://" + up.http + "/greet?who=bench"},
		{"gateway-c-http", "http://" + overHTTP.http + "/greet?who=bench"},
		{"gateway-go-wasip1-up", "http://" + up.http + "/gofn?who=bench"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			if tt.name != "native-go" {
				// The baseline again, right before: the machine's load drifts.
				base = benchRequests(b, native.URL+"/greet?who=bench", false)
			}
			res := benchRequests(b, tt.url, true)
			if tt.name == "native-go" {
				return
			}
			b.ReportMetric(float64(res.p50)/float64(base.p50), "x-native-p50")
			b.ReportMetric(100*res.rps/base.rps, "pct-native-rps")
		})
	}
}

type benchResult struct {
	p50 time.Duration
	rps float64
}

// benchRequests measures b.N sequential requests (for p50), then b.N
// requests from benchClients clients (for throughput).
func benchRequests(b *testing.B, url string, report bool) benchResult {
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
	res := benchResult{p50: lat[n/2], rps: float64(per*benchClients) / time.Since(began).Seconds()}
	if report {
		b.ReportMetric(float64(res.p50.Microseconds()), "p50-µs")
		b.ReportMetric(res.rps, "req/s")
	}
	return res
}

// BenchmarkFunctionColdStart measures the first response of a function
// scaled to zero whose module is in the worker's compile cache (a replica
// ran there before), beside a native handler's response in the same run:
// "up" with the worker in the gateway's process, "http" with the worker
// reached over HTTP as across processes. "kept": the worker kept the
// stopped replica's compiled function (a scale to zero less than
// worker.Config.ColdReplicaIdle ago); "compile-cache": it expired, so the
// function is prepared again from the module and compile caches.
func BenchmarkFunctionColdStart(b *testing.B) {
	native := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hi")
	}))
	defer native.Close()
	for _, tt := range []struct {
		name string
		opts options
	}{
		{"up-kept", options{}},
		{"up-compile-cache", options{coldIdle: time.Millisecond}},
		{"http-kept", options{functionsOverHTTP: true}},
		{"http-compile-cache", options{functionsOverHTTP: true, coldIdle: time.Millisecond}},
	} {
		b.Run(tt.name, func(b *testing.B) {
			a := start(b, tt.opts)
			a.deployFunction(b, "lazy", "greet.wasm", "/lazy", func(s *v1.WorkloadSpec) {
				s.Autoscale = &v1.Autoscale{MinReplicas: 0, MaxReplicas: 1, IdleMs: time.Hour.Milliseconds()}
			})
			var cold, base []time.Duration
			for range b.N {
				b.StopTimer()
				a.scaleToZero(b, "lazy")
				t0 := time.Now()
				get(b, native.URL)
				base = append(base, time.Since(t0))
				b.StartTimer()
				t0 = time.Now()
				get(b, "http://"+a.http+"/lazy?who=cold")
				cold = append(cold, time.Since(t0))
			}
			b.StopTimer()
			slices.Sort(cold)
			slices.Sort(base)
			b.ReportMetric(float64(cold[len(cold)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(base[len(base)/2].Microseconds()), "native-p50-µs")
		})
	}
}

// scaleToZero scales a function to zero and waits until it has no
// instance, no load that could wake it, and the gateway knows.
func (a *allInOne) scaleToZero(tb testing.TB, name string) {
	tb.Helper()
	for attempt := 0; ; attempt++ {
		// The previous request's replica first: let its wake-up land.
		a.waitFor(tb, name+" settled", func() (bool, string) {
			wl, err := a.control.GetWorkload(context.Background(), &v1.GetWorkloadRequest{Name: name})
			return err == nil && wl.GetInFlight() == 0 && wl.GetReady() == wl.GetWorkload().GetSpec().GetReplicas(), wl.String()
		})
		if _, err := a.control.ScaleWorkload(context.Background(), &v1.ScaleRequest{Name: name, Replicas: 0}); err != nil {
			tb.Fatal(err)
		}
		a.waitFor(tb, name+" at zero", func() (bool, string) {
			is := a.instances(tb, name)
			return len(is) == 0, describe(is)
		})
		// The gateways' load reports settle within two report periods;
		// the route table follows the removal within milliseconds.
		time.Sleep(2500 * time.Millisecond)
		wl, err := a.control.GetWorkload(context.Background(), &v1.GetWorkloadRequest{Name: name})
		if err != nil {
			tb.Fatal(err)
		}
		if wl.GetWorkload().GetSpec().GetReplicas() == 0 && wl.GetTotal() == 0 {
			return
		}
		if attempt == 5 {
			tb.Fatalf("%s does not stay at zero: %v", name, wl)
		}
	}
}

func get(tb testing.TB, url string) {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 200 {
		tb.Fatalf("%s: %s", url, resp.Status)
	}
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
