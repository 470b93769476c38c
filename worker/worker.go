// Package worker is the agent side of wasmorch. A Worker registers its node
// with the control plane, receives the node's desired set of instances over
// a session stream (the full set, then deltas) and converges to it through
// its runtimes, supervises each instance (restart policy, backoff), reports
// status in batches, and serves the instances' bounded logs over its own
// gRPC service.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/wasmorch/wasmorch/internal/diskspace"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/funcserver"
	"github.com/wasmorch/wasmorch/worker/logstore"
	"github.com/wasmorch/wasmorch/worker/membudget"
	"github.com/wasmorch/wasmorch/worker/modcache"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

const (
	defaultStartWorkers  = 16  // start steps in flight: fetch, prepare, instantiate
	defaultStopWorkers   = 256 // stops in flight when instances leave the set
	shutdownConcurrency  = 256
	runtimeCloseTimeout  = 10 * time.Second
	defaultReconnectBase = 100 * time.Millisecond
	defaultReconnectMax  = 5 * time.Second
)

// Worker runs the instances the control plane assigns to one node.
type Worker struct {
	cfg       Config
	logger    *slog.Logger
	lis       net.Listener
	advertise string
	runtimes  map[string]runtimeapi.Runtime
	modules   *modcache.Cache
	logs      *logstore.Store
	memory    *membudget.Budget // the node's allocatable memory (memory.go)
	statuses  *statusBatcher
	startq    *queue
	stopq     *queue
	closing   atomic.Bool // shutting down: exits are not restarted
	started   atomic.Bool // Start or Close has been called

	// Timing, replaced by tests between New and Start.
	clock         clock
	backoffBase   time.Duration
	backoffMax    time.Duration
	backoffReset  time.Duration
	reconnectBase time.Duration
	reconnectMax  time.Duration
	stopGrace     time.Duration
	startWorkers  int
	stopWorkers   int

	disk              *diskWatch // DiskPressure (disk.go); its space func is replaced by tests
	diskCheckInterval time.Duration
	// conditionsChanged has the next heartbeat sent at once, carrying a
	// condition that began or ended.
	conditionsChanged chan struct{}

	volumeGC volumeGC // state: storage.go

	mu        sync.Mutex
	instances map[string]*instance
	refs      map[artifactKey]int // instances per prepared artifact, for Release
	// memMu guards the instances' reservations and memoryWaiters, the
	// instances refused for want of memory, started again when an instance
	// gives memory back (memory.go).
	memMu         sync.Mutex
	memoryWaiters map[*instance]struct{}
	pruned        bool // stale logs removed after the first desired set

	desired *desiredSet
	kick    chan struct{} // capacity 1: the desired set changed
	persist persistState  // the desired set kept on disk (persist.go)

	clientMu sync.Mutex
	client   pb.AgentClient // nil while no session is up

	// When the control plane last answered and the node's grace it gave
	// (session.go); whether the worker said it has been out of reach
	// longer than that.
	cutMu       sync.Mutex
	lastReached time.Time
	grace       time.Duration
	cutWarned   bool

	id *identity // the node's credential; nil until joined (identity.go)

	renewMu sync.Mutex
	renewed chan struct{} // closed and replaced when the certificate is renewed
	// expired says why the node runs on an expired certificate, kept for
	// the set on disk until a join replaces it ("": it does not);
	// guarded by renewMu after New.
	expired string

	unavailableMu   sync.Mutex
	unavailable     map[string]bool // runtimes that stopped answering (see runtimes.go)
	runtimesChanged chan struct{}   // capacity 1: the runtimes offered changed

	usageState usageState // observe: the previous usage sample (usage.go)
	metrics    *metrics   // observe: nil without Config.Registry

	// The function server (func.go): HTTP functions assigned to this node.
	funcs         *funcserver.Server
	funcLis       net.Listener
	funcAdvertise string

	// The local function listener (localhttp.go); nil without one.
	local    *localRoutes
	localLis net.Listener
	// The modules of local functions to fetch (localcold.go).
	localFetchMu   sync.Mutex
	localFetch     map[string]int64 // digest → size
	localFetchKick chan struct{}
}

type artifactKey struct{ runtime, digest string }

// New validates cfg, creates the data directories and binds ListenAddr. On
// error it leaves nothing behind. Once New succeeds the Worker owns
// cfg.Runtimes: Start (or Close) closes them.
func New(ctx context.Context, cfg Config) (_ *Worker, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	tuneGC(cfg)

	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("worker: listening on %s: %w", cfg.ListenAddr, err)
	}
	var created []string
	var funcLis net.Listener
	defer func() {
		if err != nil {
			_ = lis.Close() // Don't leak the listener on error.
			if funcLis != nil {
				_ = funcLis.Close()
			}
			for i := len(created) - 1; i >= 0; i-- {
				_ = os.Remove(created[i]) // Only removes what is still empty.
			}
		}
	}()
	for _, dir := range []string{cfg.DataDir, filepath.Join(cfg.DataDir, modulesDir), cfg.CompileCacheDir(), filepath.Join(cfg.DataDir, logsDir)} {
		made, err := mkdirAll(dir)
		created = append(created, made...)
		if err != nil {
			return nil, fmt.Errorf("worker: creating %s: %w", dir, err)
		}
	}

	w := &Worker{
		cfg:           cfg,
		logger:        cfg.Logger.With("node", cfg.NodeName),
		lis:           lis,
		advertise:     advertiseAddr(cfg.AdvertiseAddr, lis.Addr()),
		runtimes:      map[string]runtimeapi.Runtime{},
		statuses:      newStatusBatcher(defaultMaxBatch),
		startq:        newQueue(),
		stopq:         newQueue(),
		clock:         realClock{},
		backoffBase:   defaultBackoff,
		backoffMax:    defaultBackoffMax,
		backoffReset:  defaultResetAfter,
		reconnectBase: defaultReconnectBase,
		reconnectMax:  defaultReconnectMax,
		stopGrace:     cfg.StopGrace,
		startWorkers:  defaultStartWorkers,
		stopWorkers:   defaultStopWorkers,
		instances:     map[string]*instance{},
		refs:          map[artifactKey]int{},
		memory:        membudget.New(cfg.Allocatable(), cfg.FunctionMemoryQueue),
		memoryWaiters: map[*instance]struct{}{},
		desired:       newDesiredSet(),
		persist:       newPersistState(cfg.DataDir),
		kick:          make(chan struct{}, 1),
		renewed:       make(chan struct{}),

		disk: &diskWatch{dir: cfg.DataDir, minFree: cfg.DiskPressureFree, minPercent: cfg.DiskPressureFreePercent,
			space: diskspace.Of},
		diskCheckInterval: defaultDiskCheckInterval,
		conditionsChanged: make(chan struct{}, 1),

		unavailable:     map[string]bool{},
		runtimesChanged: make(chan struct{}, 1),
		volumeGC:        volumeGC{kick: make(chan struct{}, 1)},
		localFetch:      map[string]int64{},
		localFetchKick:  make(chan struct{}, 1),
	}
	for _, rt := range cfg.Runtimes {
		w.runtimes[rt.Name()] = rt
	}
	if err = w.loadIdentity(); err != nil {
		return nil, err
	}
	if err = w.listenFunctions(ctx); err != nil {
		return nil, err
	}
	funcLis = w.funcLis
	if w.modules, err = modcache.New(filepath.Join(cfg.DataDir, modulesDir), w.fetchBlob); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	w.modules.SetLimit(cfg.ModuleCacheBytes) // edge: negative is no bound
	w.metrics = newMetrics(cfg.Registry, w)
	if w.logs, err = logstore.New(filepath.Join(cfg.DataDir, logsDir), cfg.LogBytesPerInstance, 0, w.logger); err != nil {
		return nil, fmt.Errorf("worker: %w", err)
	}
	w.logs.SetTotalLimit(cfg.LogBytesTotal)
	if err = resetFunctionScratch(cfg.DataDir); err != nil { // storage.go
		return nil, err
	}
	if err = w.expiredIdentity(w.restoreState()); err != nil { // persist.go, identity.go
		return nil, err
	}
	// localhttp.go
	if err = w.listenLocal(ctx); err != nil {
		return nil, err
	}
	return w, nil
}

// mkdirAll is os.MkdirAll that also returns the directories it created,
// outermost first.
func mkdirAll(dir string) ([]string, error) {
	var missing []string
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
		if filepath.Dir(d) == d {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for i, j := 0, len(missing)-1; i < j; i, j = i+1, j-1 {
		missing[i], missing[j] = missing[j], missing[i]
	}
	return missing, nil
}

// Addr returns the address the worker's gRPC service is bound to.
func (w *Worker) Addr() string { return w.lis.Addr().String() }

// Start runs the worker until ctx is done: it serves the logs service, keeps
// a session with the control plane (reconnecting forever with backoff,
// failing over through Servers in order) and supervises the assigned
// instances. When it returns every instance has been stopped and the
// runtimes, the listener and the log files are closed.
func (w *Worker) Start(ctx context.Context) error {
	if !w.started.CompareAndSwap(false, true) {
		return errdefs.Preconditionf("worker: Start called twice, or after Close")
	}
	if w.id == nil {
		if err := w.join(ctx); err != nil {
			w.closing.Store(true)
			_ = w.lis.Close()
			_ = w.funcLis.Close()
			w.closeLocal()
			w.closeRuntimes()
			_ = w.logs.Close()
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	w.probeRuntimesOnce(ctx)
	w.checkDisk() // so that the registration says whether the disk has room
	srv := grpc.NewServer(w.serverOptions()...)
	pb.RegisterWorkerServer(srv, &logService{logs: w.logs, usage: w.usage})

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := srv.Serve(w.lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("worker: serving on %s: %w", w.Addr(), err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		w.closing.Store(true)
		srv.Stop()
		return nil
	})
	g.Go(func() error { return w.serveFunctions(gctx) })
	g.Go(func() error { return w.serveLocal(gctx) })        // localhttp.go
	g.Go(func() error { w.prefetchLoop(gctx); return nil }) // localcold.go
	g.Go(func() error { return w.runSessions(gctx) })
	g.Go(func() error { return w.persistLoop(gctx) }) // persist.go
	g.Go(func() error {
		if sleep(gctx, realClock{}, resumeHold) {
			w.releaseRestored("the control plane has sent nothing for " + resumeHold.String())
		}
		return nil
	})
	g.Go(func() error { return w.keepCertificate(gctx) })
	g.Go(func() error { return w.rejoin(gctx) }) // identity.go
	g.Go(func() error { return w.reconcileLoop(gctx) })
	g.Go(func() error { return w.sendStatuses(gctx) })
	g.Go(func() error { return w.watchRuntimes(gctx) })
	g.Go(func() error { return w.watchDisk(gctx) })
	g.Go(func() error { w.removeVolumes(gctx); return nil }) // storage.go
	g.Go(func() error { w.trimCompiled(gctx); return nil })  // edge: unfit.go
	g.Go(func() error { w.dispatch(gctx, w.startq, w.startWorkers, w.doStart); return nil })
	g.Go(func() error { w.dispatch(gctx, w.stopq, w.stopWorkers, w.doStop); return nil })
	g.Go(func() error { w.retireThreadsLoop(gctx); return nil }) // threads.go
	w.logger.Info("worker started", "addr", w.Addr(), "servers", w.cfg.Servers)
	err := g.Wait()

	w.closing.Store(true)
	w.stopAll()
	w.closeRuntimes()
	_ = w.logs.Close() // Plain writes: nothing buffered to lose.
	w.logger.Info("worker stopped")
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Close releases what New acquired when Start is never going to run. After
// Start has been called it does nothing: Start closes everything on return.
// It is safe to call more than once.
func (w *Worker) Close() error {
	if !w.started.CompareAndSwap(false, true) {
		return nil
	}
	err := w.lis.Close()
	_ = w.funcLis.Close()
	w.closeLocal()
	w.closeRuntimes()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// dispatch runs step for each instance popped from q in a goroutine of
// its own, at most n at once, and returns once ctx is done and the steps
// under way have ended. Starts (fetch, prepare, instantiate) run 16 at
// once; stops mostly wait (for the requests in flight, for a container's
// grace), so that instances that leave together are all signalled
// together, rather than a few at a time, each batch waiting out its grace.
// The goroutines exist while there is work: an idle worker (edge: a board
// that holds a few instances) keeps none.
func (w *Worker) dispatch(ctx context.Context, q *queue, n int, step func(context.Context, *instance)) {
	var wg sync.WaitGroup
	defer wg.Wait()
	slots := make(chan struct{}, n)
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		in, ok := q.pop(ctx)
		if !ok || ctx.Err() != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-slots; wg.Done() }()
			step(ctx, in)
		}()
	}
}

// stopAll stops every instance concurrently, each within the stop grace.
func (w *Worker) stopAll() {
	w.mu.Lock()
	all := make([]*instance, 0, len(w.instances))
	for _, in := range w.instances {
		all = append(all, in)
	}
	w.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), w.stopGrace+stopSlack)
	defer cancel()
	var g errgroup.Group
	g.SetLimit(shutdownConcurrency)
	for _, in := range all {
		in.mu.Lock()
		in.stopping, in.final = true, true
		if in.timer != nil {
			in.timer.Stop()
			in.timer = nil
		}
		run := in.run
		in.run = nil
		in.mu.Unlock()
		if run != nil {
			g.Go(func() error { run.Stop(ctx, w.stopGrace); return nil })
		}
	}
	_ = g.Wait() // The goroutines return nil.
}

func (w *Worker) closeRuntimes() {
	ctx, cancel := context.WithTimeout(context.Background(), runtimeCloseTimeout)
	defer cancel()
	for _, rt := range w.cfg.Runtimes {
		if err := rt.Close(ctx); err != nil {
			w.logger.Warn("closing runtime", "runtime", rt.Name(), "err", err)
		}
	}
}

// setDesired applies one message of the session (a full set or a delta)
// to the desired set; the reconciler converges to it when it runs.
func (w *Worker) setDesired(a *pb.Assignments) {
	w.desired.apply(a)
	w.applyLocalFunctions(a) // localcold.go
	w.kickReconcile()
	w.persistSoon()
}

func (w *Worker) kickReconcile() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

func (w *Worker) reconcileLoop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-w.kick:
		}
		w.mu.Lock()
		prune := !w.pruned // a pass that prunes needs the whole set
		w.mu.Unlock()
		if p, ok := w.desired.take(prune); ok {
			w.converge(p)
		}
	}
}

// converge starts what the set has and the worker lacks, and stops what the
// worker has and the set lacks, holds at another generation, or marks
// terminating: among every instance for a pass over the whole set, among
// those that changed otherwise. An instance still stopping is left to
// finish; forgetting it reports it Stopped and kicks another pass. A
// terminating instance the worker does not run (it restarted meanwhile)
// is reported Stopped at once, once what a previous process left of it
// is removed.
func (w *Worker) converge(p pass) {
	var stops, starts []*instance
	var absent []*pb.Instance
	w.mu.Lock()
	if p.all {
		for id, in := range w.instances {
			if rec, ok := p.want[id]; !ok || terminating(rec) || rec.GetGeneration() != in.rec.GetGeneration() {
				stops = append(stops, in)
			}
		}
	}
	for id, rec := range p.want {
		in, ok := w.instances[id]
		switch {
		case ok && !p.all && (rec == nil || terminating(rec) || rec.GetGeneration() != in.rec.GetGeneration()):
			stops = append(stops, in)
		case !ok && terminating(rec):
			absent = append(absent, rec)
		case !ok && rec != nil:
			in := w.newInstanceLocked(rec)
			w.instances[id] = in
			starts = append(starts, in)
		}
	}
	prune := p.all && !w.pruned
	if prune {
		w.pruned = true
	}
	w.mu.Unlock()

	for _, in := range stops {
		w.requestStop(in)
	}
	for _, in := range starts {
		w.enqueueStart(in)
	}
	if prune {
		if err := w.logs.RemoveUnknown(); err != nil {
			w.logger.Warn("removing logs of unassigned instances", "err", err)
		}
		w.removeUnwanted(p.want)
		w.removeUnknownScratch() // storage.go
		w.volumeGC.kickNow()
	}
	w.reportAbsent(absent)
	if len(stops)+len(starts) > 0 {
		w.logger.Debug("converging", "revision", p.rev, "whole set", p.all, "looked at", len(p.want), "starting", len(starts), "stopping", len(stops))
	}
}

func (w *Worker) newInstanceLocked(rec *pb.Instance) *instance {
	rec = runsAs(rec)
	in := &instance{rec: rec, log: w.logs.Open(rec.GetId())}
	w.resumeLocked(in) // persist.go
	if w.local != nil {
		w.local.add(rec) // localhttp.go
	}
	if spec := rec.GetSpec(); spec != nil {
		if !usesImageRef(spec) {
			w.modules.Pin(spec.GetModuleDigest()) // edge: not evicted while it runs here
		}
		in.rt = w.runtimes[kindOf(spec)]
		if in.rt != nil {
			w.refs[artifactKey{in.rt.Name(), artifactID(spec)}]++
		}
	}
	return in
}

// unrefLocked drops in's reference to its artifact, releasing the artifact
// from its runtime when no instance wants it any more.
func (w *Worker) unrefLocked(in *instance) {
	spec := in.rec.GetSpec()
	if spec != nil && !usesImageRef(spec) {
		w.modules.Unpin(spec.GetModuleDigest())
	}
	if in.rt == nil {
		return
	}
	key := artifactKey{in.rt.Name(), artifactID(spec)}
	if w.refs[key]--; w.refs[key] > 0 {
		return
	}
	delete(w.refs, key)
	if art, ok := w.artifactOf(spec); ok {
		in.rt.Release(art)
	}
}

// currentStatuses returns the latest status of every instance.
func (w *Worker) currentStatuses() []*pb.InstanceStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*pb.InstanceStatus, 0, len(w.instances))
	for _, in := range w.instances {
		in.mu.Lock()
		if in.status != nil {
			out = append(out, in.status)
		}
		in.mu.Unlock()
	}
	return out
}

func (w *Worker) runtimeNames() []string {
	names := make([]string, 0, len(w.runtimes))
	for name := range w.runtimes {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
