package scale

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Bounds of the waits. They end a point that cannot be reached, or a
// measurement that cannot complete, with the reason in the table; none
// is a threshold on how fast anything should be.
const (
	nodesLimit    = 10 * time.Minute // all hollow nodes Ready
	trialLimit    = time.Minute      // one 1-replica apply to Running
	readLimit     = time.Minute      // the calls of one read measurement
	healLimit     = 3 * time.Minute  // node loss to replacements Running
	burstLimit    = 5 * time.Minute  // the throughput workload bound
	settle        = 5 * time.Second  // after a point is populated, before RSS is read
	trialInterval = 2 * time.Millisecond
	// reserve is the time kept back from the test's -timeout for the
	// last measurements and the report.
	reserve = 10 * time.Minute
)

// BenchmarkScale measures what one change costs as the cluster grows: see
// the package doc and docs/scale.md. It runs once whatever b.N is.
func BenchmarkScale(b *testing.B) {
	if binary == "" {
		b.Skip("the scale benchmark runs only with WASMORCH_BENCH_SCALE=1 (make bench-scale): it takes tens of minutes")
	}
	set, err := settingsFromEnv()
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	r := &scaleRun{b: b, set: set, env: benchEnv(b), started: time.Now()}
	r.setUp(ctx)
	for k, p := range set.points {
		if !r.measurePoint(ctx, k, p) {
			break
		}
	}
	b.StopTimer()
	r.report(os.Stdout)
}

// scaleRun is one run of the benchmark: the processes, what it has asked
// the control plane for, and what it measured.
type scaleRun struct {
	b       *testing.B
	set     settings
	env     []string
	started time.Time

	srv      *server
	api      *controlAPI
	digest   string
	victims  []*simulator // one per point, each holding set.loss instances of loss-<k>
	lossErr  []string     // per victim: why its instances did not all run ("" when they did)
	main     *simulator
	created  int // instances asked for: the sum of every workload's replicas
	rssEmpty int64
	rssNodes int64 // with every node Ready
	atNodes  int   // instances when rssNodes was read (the victims')

	results []*pointResult
}

// pointResult is what was measured at one scale point.
type pointResult struct {
	point     int
	notReason string // why the point was not reached; "" when it was
	instances int    // instances asked for when measured
	ready     int    // of which Running

	added    int // instances populated for this point
	populate time.Duration

	bound, running []time.Duration // 1-replica apply to bound, to Running
	trialErr       string
	runningErr     string // why → Running was not measured

	get, list       []time.Duration // GetWorkload, ListInstances of one workload
	getErr, listErr string
	fullList        []time.Duration // ListInstances of everything
	fullErr         string
	fullCount       int
	heal            time.Duration // node loss to replacements Running
	healErr         string
	burst           int
	burstTook       time.Duration
	storedTook      time.Duration // until the last binding was stored, by the Scheduled events
	storedErr       string
	burstErr        string
	rss, db         int64
	rssErr, dbErr   string
	took            time.Duration // populating and measuring the point
}

func (r *scaleRun) logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s scale: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, a...))
}

func (r *scaleRun) fatalf(format string, a ...any) {
	r.b.Helper()
	r.b.Fatalf(format, a...)
}

// timeLeft is how long the run may still take before the test's -timeout,
// less the reserve.
func (r *scaleRun) timeLeft() time.Duration {
	timeout := testTimeout()
	if timeout <= 0 {
		return time.Duration(1<<62 - 1)
	}
	return time.Until(testStart.Add(timeout)) - reserve
}

// setUp starts the server, uploads the module, places each point's
// victim workload on a node of its own and starts the main simulator.
func (r *scaleRun) setUp(ctx context.Context) {
	r.srv, r.api = startServer(ctx, r.b, r.env)
	time.Sleep(settle)
	rss, err := r.srv.rss()
	if err != nil {
		r.fatalf("%v", err)
	}
	r.rssEmpty = rss
	module, err := os.ReadFile(filepath.Join(repoRoot, "testdata", "ticker.wasm"))
	if err != nil {
		r.fatalf("%v", err)
	}
	if r.digest, err = r.api.upload(ctx, module); err != nil {
		r.fatalf("upload: %v", err)
	}
	token, err := r.api.createToken(ctx)
	if err != nil {
		r.fatalf("token: %v", err)
	}

	// Each point's node loss kills a node that holds set.loss instances:
	// placed while that node is the only one that takes new instances
	// (the earlier victims are cordoned), before the main simulator runs.
	for k := range r.set.points {
		v := startSimulator(r.b, r.env, r.srv, token, fmt.Sprintf("victim%d", k+1), 1, r.set.loss+10, 0)
		r.victims = append(r.victims, v)
		r.waitNodes(ctx, k+1, v)
		for _, earlier := range r.victims[:k] {
			if err := r.api.cordon(ctx, earlier.nodes[0], true); err != nil {
				r.fatalf("cordon %s: %v", earlier.nodes[0], err)
			}
		}
		name := lossWorkload(k)
		if err := r.api.apply(ctx, name, r.digest, r.set.loss); err != nil {
			r.fatalf("%v", err)
		}
		r.created += r.set.loss
		err := poll(ctx, healLimit, 100*time.Millisecond, func(ctx context.Context) (bool, string, error) {
			per, err := r.runningPerNode(ctx, name)
			return err == nil && per[v.nodes[0]] == r.set.loss, fmt.Sprintf("%v%s", per, orNothing(err)), nil
		})
		why := ""
		if err != nil {
			why = fmt.Sprintf("%s's %d instances never all Running on %s: %v", name, r.set.loss, v.nodes[0], err)
			r.logf("%s", why)
		}
		r.lossErr = append(r.lossErr, why)
	}
	for _, v := range r.victims {
		if err := r.api.cordon(ctx, v.nodes[0], false); err != nil {
			r.fatalf("uncordon %s: %v", v.nodes[0], err)
		}
	}
	r.logf("starting %d hollow nodes", r.set.nodes)
	r.main = startSimulator(r.b, r.env, r.srv, token, "sim", r.set.nodes, r.set.slotsPerNode(), 10)
	r.waitNodes(ctx, len(r.victims)+r.set.nodes, r.main)
	time.Sleep(settle)
	if r.rssNodes, err = r.srv.rss(); err != nil {
		r.fatalf("%v", err)
	}
	r.atNodes = r.created
	r.logf("%d nodes Ready", len(r.victims)+r.set.nodes)
}

func lossWorkload(k int) string { return fmt.Sprintf("loss-%d", k+1) }

func orNothing(err error) string {
	if err == nil {
		return ""
	}
	return " (" + short(err) + ")"
}

// waitNodes waits until n nodes are Ready, the last of them sim's.
func (r *scaleRun) waitNodes(ctx context.Context, n int, sim *simulator) {
	r.b.Helper()
	err := poll(ctx, nodesLimit, 500*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		if !sim.running() {
			return false, "", fmt.Errorf("%s exited: %s", sim.name, sim.output())
		}
		ready, err := r.api.readyNodes(ctx)
		return err == nil && ready >= n, fmt.Sprintf("%d Ready%s", ready, orNothing(err)), nil
	})
	if err != nil {
		r.fatalf("waiting for %d Ready nodes: %v", n, err)
	}
}

// runningPerNode counts a workload's Running instances per node.
func (r *scaleRun) runningPerNode(ctx context.Context, workload string) (map[string]int, error) {
	is, err := r.api.workloadInstances(ctx, workload)
	per := map[string]int{}
	for _, in := range is {
		if in.GetState() == pb.InstanceState_INSTANCE_STATE_RUNNING {
			per[in.GetInstance().GetNode()]++
		}
	}
	return per, err
}

// measurePoint populates the cluster to p instances and measures there.
// A point not reached is still measured where it stands (what needs
// instances to run is left out), and ends the run.
func (r *scaleRun) measurePoint(ctx context.Context, k, p int) bool {
	res := &pointResult{point: p}
	r.results = append(r.results, res)
	start := time.Now()
	defer func() { res.took = time.Since(start) }()
	if r.timeLeft() < r.set.populate/2 {
		res.notReason = "not attempted: too little of the test's -timeout left"
		return false
	}
	r.logf("point %s: populating", count(p))
	res.notReason = r.populate(ctx, res)
	reached := res.notReason == ""
	r.logf("point %s: %s/%s Running after %s%s", count(p), count(res.ready), count(r.created), dur(res.populate), map[bool]string{true: "", false: "; " + res.notReason}[reached])
	time.Sleep(settle)
	res.instances = r.created
	if rss, err := r.srv.rss(); err != nil {
		res.rssErr = err.Error()
	} else {
		res.rss = rss
	}
	if db, err := r.srv.dbSize(); err != nil {
		res.dbErr = err.Error()
	} else {
		res.db = db
	}
	r.logf("point %s: applying 1-replica workloads", count(p))
	r.applyTrials(ctx, res, reached)
	r.logf("point %s: reads", count(p))
	r.reads(ctx, res)
	switch {
	case !reached:
		res.healErr = "not measured: the point was not reached"
	case r.lossErr[k] != "":
		res.healErr = "not measured: " + r.lossErr[k]
	default:
		r.logf("point %s: node loss", count(p))
		r.nodeLoss(ctx, k, res)
	}
	r.logf("point %s: scheduling throughput", count(p))
	r.throughput(ctx, res)
	return reached
}

// populate applies workloads of set.workloadSize replicas until the
// cluster holds p instances, and waits until all are Running. It returns
// why not, when they are not within set.populate, or when their count
// stops moving for set.stall.
func (r *scaleRun) populate(ctx context.Context, res *pointResult) string {
	t0 := time.Now()
	defer func() { res.populate = time.Since(t0) }()
	for i := 0; r.created < res.point; i++ {
		n := min(r.set.workloadSize, res.point-r.created)
		if err := r.api.apply(ctx, fmt.Sprintf("pop-%d-%d", res.point, i), r.digest, n); err != nil {
			return fmt.Sprintf("not reached: %v", short(err))
		}
		r.created += n
		res.added += n
	}
	limit := min(r.set.populate, r.timeLeft())
	last, lastMoved := -1, time.Now()
	err := poll(ctx, limit, 200*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		if !r.main.running() {
			return false, "", fmt.Errorf("the simulator exited: %s", r.main.output())
		}
		ready, err := r.api.readyInstances(ctx)
		if err == nil {
			res.ready = ready
			if ready != last {
				last, lastMoved = ready, time.Now()
			} else if time.Since(lastMoved) > r.set.stall {
				return false, "", fmt.Errorf("stalled at %s/%s Running for %s", count(ready), count(r.created), r.set.stall)
			}
		}
		return err == nil && ready >= r.created, fmt.Sprintf("%s/%s Running%s", count(ready), count(r.created), orNothing(err)), nil
	})
	if err != nil {
		return "not reached: " + err.Error()
	}
	return ""
}

// applyTrials applies 1-replica workloads one after another and times
// each to its instance bound and Running, polling every 2 ms. Where
// instances do not run (running false, or a trial never Running), only
// the binding is timed.
func (r *scaleRun) applyTrials(ctx context.Context, res *pointResult, running bool) {
	if !running {
		res.runningErr = "not measured: the point was not reached"
	}
	for i := range r.set.trials {
		name := fmt.Sprintf("probe-%d-%d", res.point, i)
		t0 := time.Now()
		if err := r.api.apply(ctx, name, r.digest, 1); err != nil {
			res.trialErr = short(err)
			return
		}
		r.created++
		var bound, ran time.Duration
		err := poll(ctx, trialLimit, trialInterval, func(ctx context.Context) (bool, string, error) {
			is, err := r.api.workloadInstances(ctx, name)
			if err != nil || len(is) != 1 {
				return false, fmt.Sprintf("%d instances%s", len(is), orNothing(err)), nil
			}
			if bound == 0 && is[0].GetInstance().GetNode() != "" {
				bound = time.Since(t0)
			}
			if is[0].GetState() == pb.InstanceState_INSTANCE_STATE_RUNNING {
				ran = time.Since(t0)
			}
			return ran > 0 || bound > 0 && res.runningErr != "", is[0].GetState().String(), nil
		})
		if bound == 0 {
			res.trialErr = fmt.Sprintf("%s never bound: %v", name, err)
			return
		}
		res.bound = append(res.bound, bound)
		switch {
		case ran > 0:
			res.running = append(res.running, ran)
		case res.runningErr == "":
			res.runningErr = fmt.Sprintf("%s bound but never Running: %v", name, err)
		}
	}
}

// reads times the single-object read, the filtered list and the full
// list.
func (r *scaleRun) reads(ctx context.Context, res *pointResult) {
	one := fmt.Sprintf("probe-%d-0", res.point)
	res.get, res.getErr = timeCalls(r.set.reads, func() error { return r.api.getWorkload(ctx, one) })
	res.list, res.listErr = timeCalls(r.set.reads, func() error {
		_, err := r.api.workloadInstances(ctx, one)
		return err
	})
	res.fullList, res.fullErr = timeCalls(3, func() error {
		n, err := r.api.allInstances(ctx)
		res.fullCount = n
		return err
	})
}

// timeCalls times up to n calls, for at most readLimit; the first error
// ends it.
func timeCalls(n int, f func() error) ([]time.Duration, string) {
	var out []time.Duration
	deadline := time.Now().Add(readLimit)
	for range n {
		t0 := time.Now()
		if err := f(); err != nil {
			return out, "fails: " + short(err)
		}
		out = append(out, time.Since(t0))
		if time.Now().After(deadline) {
			break
		}
	}
	return out, ""
}

// nodeLoss kills this point's victim simulator (kill -9) and times until
// its workload's instances are Running elsewhere.
func (r *scaleRun) nodeLoss(ctx context.Context, k int, res *pointResult) {
	v, name := r.victims[k], lossWorkload(k)
	t0 := time.Now()
	v.stop(syscall.SIGKILL)
	err := poll(ctx, healLimit, 10*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		per, err := r.runningPerNode(ctx, name)
		elsewhere := 0
		for node, n := range per {
			if node != v.nodes[0] {
				elsewhere += n
			}
		}
		return err == nil && elsewhere >= r.set.loss, fmt.Sprintf("%d Running elsewhere%s", elsewhere, orNothing(err)), nil
	})
	if err != nil {
		res.healErr = "not healed: " + err.Error()
		return
	}
	res.heal = time.Since(t0)
}

// throughput applies one workload of set.burst replicas (at most the
// point) and times it to its last instance bound, as a watch of the
// workload's instances, started before the apply, sees the bindings.
func (r *scaleRun) throughput(ctx context.Context, res *pointResult) {
	res.burst = min(r.set.burst, res.point)
	name := fmt.Sprintf("burst-%d", res.point)
	w, err := r.api.watchBound(ctx, name)
	if err != nil {
		res.burstErr = short(err)
		return
	}
	defer w.stop()
	t0 := time.Now()
	if err := r.api.apply(ctx, name, r.digest, res.burst); err != nil {
		res.burstErr = short(err)
		return
	}
	r.created += res.burst
	limit := time.NewTimer(burstLimit)
	defer limit.Stop()
	bound := 0
	for bound < res.burst {
		select {
		case bound = <-w.bound:
		case err := <-w.err:
			res.burstErr = fmt.Sprintf("the watch of %s ended at %d/%d bound: %s", name, bound, res.burst, short(err))
			return
		case <-limit.C:
			res.burstErr = fmt.Sprintf("%d/%d bound after %s", bound, res.burst, burstLimit)
			return
		}
	}
	res.burstTook = time.Since(t0)
	// The control plane's own figure: when its Scheduled events say the
	// last binding was stored (the server's clock, on this machine).
	placed, last, err := r.api.scheduledAt(ctx, name)
	switch {
	case err != nil:
		res.storedErr = short(err)
	case placed < res.burst:
		res.storedErr = fmt.Sprintf("the Scheduled events name %d of %d placements", placed, res.burst)
	default:
		res.storedTook = last.Sub(t0)
	}
}
