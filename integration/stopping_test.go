package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/wasmorch/wasmorch/ctrrt"
	"github.com/wasmorch/wasmorch/internal/ctrtest"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/funcserver"
)

// What happens while instances stop: a function replica drains its
// requests within the stop grace and what it must cut off is never a 200
// with no body; an instance stays listed Terminating until its process is
// gone; a rolling update counts those against max surge; and the worker
// stops every instance that leaves at once.

// answer is how the gateway answered one request.
type answer struct {
	code int
	body string
	id   string // the request's id (X-Request-Id)
	err  error
}

// cutOff says whether an answer is the 503 of a request that its
// replica's stop cut off: the status, and why in the member's log under
// the request's id (a client is told only to retry).
func cutOff(got answer, logs *syncBuffer) bool {
	return got.code == http.StatusServiceUnavailable && logLineWith(logs.String(), got.id, "Stopped", "stopped before the function answered") != ""
}

// sendRunning sends a request to the gateway and returns once the worker
// runs it (the function server has want requests in flight), trying again
// while the gateway has not routed the function yet.
func (a *allInOne) sendRunning(t *testing.T, method, path string, want int) <-chan answer {
	t.Helper()
	fs := a.worker.FunctionHandler().(*funcserver.Server)
	for attempt := 0; attempt < 1000; attempt++ {
		ch := make(chan answer, 1)
		go func() {
			req, err := http.NewRequest(method, "http://"+a.http+path, strings.NewReader("a body"))
			if err != nil {
				ch <- answer{err: err}
				return
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				ch <- answer{err: err}
				return
			}
			b, err := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			ch <- answer{code: resp.StatusCode, body: string(b), id: resp.Header.Get("X-Request-Id"), err: err}
		}()
		for fs.InFlight() < want {
			select {
			case got := <-ch:
				if got.code != http.StatusServiceUnavailable {
					t.Fatalf("%s %s answered before it ran: %d %q %v", method, path, got.code, got.body, got.err)
				}
				ch = nil // not routed yet: again
			case <-time.After(time.Millisecond):
			}
			if ch == nil {
				break
			}
		}
		if ch != nil {
			return ch
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s %s never ran", method, path)
	return nil
}

// wait returns the answer, or fails the test if none comes (a hang guard).
func wait(t *testing.T, what string, ch <-chan answer) answer {
	t.Helper()
	select {
	case got := <-ch:
		if got.err != nil {
			t.Fatalf("%s: %v", what, got.err)
		}
		return got
	case <-time.After(time.Minute):
		t.Fatalf("%s: no answer within a minute", what)
		return answer{}
	}
}

// TestFunctionRequestCutOffByItsStopIs503: a request still running when
// its replica's stop grace ends (here: a function that never answers, its
// replica scaled away) is answered 503 saying so, whether the gateway
// calls the worker in its process or over HTTP, never 200 with no body.
func TestFunctionRequestCutOffByItsStopIs503(t *testing.T) {
	for _, tt := range []struct {
		name string
		opts options
	}{{"up", options{}}, {"http", options{functionsOverHTTP: true}}} {
		t.Run(tt.name, func(t *testing.T) {
			logs := &syncBuffer{}
			tt.opts.stopGrace, tt.opts.logs = 200*time.Millisecond, logs
			a := start(t, tt.opts)
			a.deploy(t, "spin", "loop.wasm", &v1.WorkloadSpec{Kind: "wasm", Replicas: 1, Http: &v1.HttpTrigger{Route: "/spin"}})
			a.waitInstances(t, "spin", 1, state(v1.InstanceState_INSTANCE_STATE_RUNNING))
			post := a.sendRunning(t, http.MethodPost, "/spin", 1)
			if _, err := a.control.ScaleWorkload(context.Background(), &v1.ScaleRequest{Name: "spin", Replicas: 0}); err != nil {
				t.Fatal(err)
			}
			got := wait(t, "the request cut off", post)
			if !cutOff(got, logs) {
				t.Errorf("request cut off by its replica's stop: %d %q, want 503 and the log saying the replica stopped before the function answered", got.code, got.body)
			}
			a.waitFor(t, "spin's replica gone", func() (bool, string) {
				is := a.instances(t, "spin")
				return len(is) == 0, describe(is)
			})
		})
	}
}

// TestFunctionRolloutRetriesACutOffGET: a rollout replaces a replica
// whose requests outlive the stop grace: the GET it cuts off is sent
// again to the new replica (it is idempotent), the POST is answered 503.
func TestFunctionRolloutRetriesACutOffGET(t *testing.T) {
	logs := &syncBuffer{}
	a := start(t, options{stopGrace: 200 * time.Millisecond, logs: logs})
	spec := func() *v1.WorkloadSpec {
		return &v1.WorkloadSpec{Kind: "wasm", Replicas: 1, Http: &v1.HttpTrigger{Route: "/spin"}}
	}
	a.deploy(t, "spin", "loop.wasm", spec())
	a.waitInstances(t, "spin", 1, state(v1.InstanceState_INSTANCE_STATE_RUNNING))
	get := a.sendRunning(t, http.MethodGet, "/spin", 1)
	post := a.sendRunning(t, http.MethodPost, "/spin", 2)

	a.deploy(t, "spin", "greet.wasm", spec()) // generation 2 answers
	if got := wait(t, "the GET", get); got.code != 200 || got.body != "hello, world!\n" {
		t.Errorf("GET cut off by the rollout: %d %q, want 200 from generation 2", got.code, got.body)
	}
	if got := wait(t, "the POST", post); !cutOff(got, logs) {
		t.Errorf("POST cut off by the rollout: %d %q, want 503 and the log saying the replica stopped", got.code, got.body)
	}
}

// TestFunctionScaleDownDrainsTheRequestInFlight: a replica scaled away
// is Terminating while it finishes the request it runs (here: the
// client is still sending the body), taking no new one; the request is
// answered in full, and only then does the instance go.
func TestFunctionScaleDownDrainsTheRequestInFlight(t *testing.T) {
	a := start(t, options{stopGrace: time.Minute}) // the body, not the grace, decides
	// Routed first: a gateway that answers 503 to a request whose body is
	// still coming waits for that body before it can answer.
	a.deployFunction(t, "echo", "echo.wasm", "/echo")
	fs := a.worker.FunctionHandler().(*funcserver.Server)

	// The request runs while its client still sends the body.
	body, send := io.Pipe()
	defer send.Close()
	result := make(chan answer, 1)
	go func() {
		resp, err := http.Post("http://"+a.http+"/echo", "text/plain", body)
		if err != nil {
			result <- answer{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		result <- answer{code: resp.StatusCode, body: string(b), err: err}
	}()
	go func() { _, _ = io.WriteString(send, "first half, ") }()
	a.waitFor(t, "the echo request running", func() (bool, string) {
		select {
		case got := <-result:
			t.Fatalf("the echo request answered before its body was sent: %d %q %v", got.code, got.body, got.err)
		default:
		}
		return fs.InFlight() == 1, fmt.Sprintf("%d in flight", fs.InFlight())
	})

	if _, err := a.control.ScaleWorkload(context.Background(), &v1.ScaleRequest{Name: "echo", Replicas: 0}); err != nil {
		t.Fatal(err)
	}
	a.waitInstances(t, "echo", 1, state(v1.InstanceState_INSTANCE_STATE_TERMINATING))
	// New requests are refused (once the worker has heard: before, one is
	// still taken, and drained like the first).
	a.waitFor(t, "a new request refused", func() (bool, string) {
		resp, err := http.Post("http://"+a.http+"/echo", "text/plain", strings.NewReader("late"))
		if err != nil {
			return false, err.Error()
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable, resp.Status
	})
	if is := a.instances(t, "echo"); len(is) != 1 || is[0].GetState() != v1.InstanceState_INSTANCE_STATE_TERMINATING {
		t.Fatalf("with its request in flight, echo's replica is %s; want it still Terminating", describe(is))
	}

	if _, err := io.WriteString(send, "second half"); err != nil {
		t.Fatal(err)
	}
	_ = send.Close()
	if got := wait(t, "the drained request", result); got.code != 200 || got.body != "first half, second half" {
		t.Errorf("the request in flight when its replica stopped: %d %q, want 200 and its whole body echoed", got.code, got.body)
	}
	a.waitFor(t, "echo's replica gone once drained", func() (bool, string) {
		is := a.instances(t, "echo")
		return len(is) == 0, describe(is)
	})
}

// TestContainersTerminateWithinSurgeAndTogether runs a container that
// takes its whole stop grace (it ignores SIGTERM): a rolling update of 2
// replicas with max surge 1 never has more than 3 containers at once, the
// old ones shown Terminating until they are gone; and 20 replicas scaled
// to 0 are all Terminating, all told to stop (SIGTERM) while all their
// containers still run, rather than a few at a time.
func TestContainersTerminateWithinSurgeAndTogether(t *testing.T) {
	d := ctrtest.Start(t)
	const grace = 4 * time.Second
	a := start(t, options{containerd: d, stopGrace: grace})
	ctx := context.Background()
	digest := a.uploadArchive(t, ctrtest.StubbornImage(t))
	ctrd := d.Client(t, ctrrt.DefaultConfig().Namespace)
	containers := func() int {
		l, err := ctrd.Containers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return len(l)
	}
	spec := &v1.WorkloadSpec{Kind: "container", ModuleDigest: digest, Replicas: 2, MaxSurge: "1", MaxUnavailable: "0",
		Env: []*v1.EnvVar{{Name: "V", Value: "1"}}}
	apply := func() {
		t.Helper()
		if _, err := a.control.ApplyWorkload(ctx, &v1.ApplyWorkloadRequest{Name: "svc", Spec: spec}); err != nil {
			t.Fatal(err)
		}
	}
	apply()
	a.waitInstances(t, "svc", 2, state(v1.InstanceState_INSTANCE_STATE_RUNNING))

	spec.Env[0].Value = "2"
	apply()
	peak, sawTerminating := 0, false
	a.waitFor(t, "the rollout to generation 2, its old containers gone", func() (bool, string) {
		n := containers()
		peak = max(peak, n)
		is := a.instances(t, "svc")
		done := len(is) == 2
		for _, iv := range is {
			sawTerminating = sawTerminating || iv.GetState() == v1.InstanceState_INSTANCE_STATE_TERMINATING
			done = done && iv.GetInstance().GetGeneration() == 2 && iv.GetState() == v1.InstanceState_INSTANCE_STATE_RUNNING
		}
		return done && n == 2, fmt.Sprintf("%d containers, instances %s", n, describe(is))
	})
	if peak > 3 {
		t.Errorf("%d containers ran at once during a rolling update of 2 replicas with max surge 1", peak)
	}
	if !sawTerminating {
		t.Errorf("no old instance was ever listed Terminating while its container ran out its grace")
	}

	const n = 20 // more than the 16 stops the worker once ran at a time
	if _, err := a.control.ScaleWorkload(ctx, &v1.ScaleRequest{Name: "svc", Replicas: n}); err != nil {
		t.Fatal(err)
	}
	a.waitInstances(t, "svc", n, state(v1.InstanceState_INSTANCE_STATE_RUNNING))
	if _, err := a.control.ScaleWorkload(ctx, &v1.ScaleRequest{Name: "svc", Replicas: 0}); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, fmt.Sprintf("all %d Terminating and told to stop, all %d containers still running", n, n), func() (bool, string) {
		told := 0
		for _, out := range a.logs(t, "svc") {
			if strings.Contains(out, "stubborn: got SIGTERM") {
				told++
			}
		}
		is := a.instances(t, "svc")
		terminating := 0
		for _, iv := range is {
			if iv.GetState() == v1.InstanceState_INSTANCE_STATE_TERMINATING {
				terminating++
			}
		}
		c := containers()
		return told == n && terminating == n && c == n, fmt.Sprintf("%d told to stop, %d Terminating, %d containers", told, terminating, c)
	})
	a.waitFor(t, "every instance and container gone", func() (bool, string) {
		is := a.instances(t, "svc")
		c := containers()
		return len(is) == 0 && c == 0, fmt.Sprintf("%d containers, instances %s", c, describe(is))
	})
}
