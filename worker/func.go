package worker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/httptrigger"
	"github.com/wasmorch/wasmorch/internal/resources"
	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
	"github.com/wasmorch/wasmorch/worker/funcserver"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// A workload with an HTTP trigger is a function: its instances are not run
// as long-running commands but served by the worker's function server, one
// fresh sandbox per request. An instance is Running once its module is
// prepared and the function server accepts requests for it.

// DefaultFunctionListenAddr is where the function server listens unless
// Config.FunctionListenAddr says otherwise.
const DefaultFunctionListenAddr = "127.0.0.1:0"

// functionServerShutdown bounds how long requests in flight may take once
// the worker stops.
const functionServerShutdown = 5 * time.Second

// listenFunctions binds the function server's listener (in New).
func (w *Worker) listenFunctions(ctx context.Context) error {
	addr := w.cfg.FunctionListenAddr
	if addr == "" {
		addr = DefaultFunctionListenAddr
	}
	var lc net.ListenConfig
	lis, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("worker: function server listening on %s: %w", addr, err)
	}
	w.funcLis = lis
	w.funcAdvertise = advertiseAddr("", lis.Addr())
	w.funcs = funcserver.New(w.logger.With("component", "funcserver"))
	w.funcs.LimitMemory(w.memory, w.cfg.FunctionMemoryWait)
	w.funcs.EnableCold(funcserver.ColdConfig{
		Prepare: w.prepareCold,
		// Kept like an instance's output, bounded, so that `wasmorch logs`
		// shows it beside the replicas'.
		Logs: func(workload string) io.Writer { return w.logs.Open(httptrigger.ColdLogID(workload)) },
		Idle: w.cfg.ColdReplicaIdle,
	})
	return nil
}

// prepareCold prepares a function the node holds no replica of, for a
// cold start (see funcserver.ColdConfig): the module comes from the module
// cache (fetched by digest if missing) and its code from the compile cache.
// What a cold replica writes to stderr is kept under the function's cold
// log (httptrigger.ColdLogID), as it has no instance.
func (w *Worker) prepareCold(ctx context.Context, workload string, spec *pb.WorkloadSpec) (runtimeapi.Function, error) {
	if len(spec.GetConfigs())+len(spec.GetSecrets())+len(spec.GetConfigFiles())+len(spec.GetSecretFiles()) > 0 && !w.localSpec(workload, spec) {
		// The spec the gateway sends is the workload's, which names its
		// configs and secrets (environment variables or files) but never
		// holds their values: only an instance's assignment does, and
		// (edge) the spec of a local function, which the local listener
		// passes on (localcold.go). Such a function waits for a replica,
		// or answers from the kept function of a replica that stopped
		// here, which has them.
		return nil, errors.New("a function with configs or secrets (config or secret files, or environment from them) is not started without a replica")
	}
	if isWasmService(spec) {
		return nil, errors.New("a Wasm service is not started without a replica") // wasmsvc.go
	}
	frt, ok := w.runtimes[kindOf(spec)].(runtimeapi.FunctionRuntime)
	if !ok || usesImageRef(spec) {
		return nil, fmt.Errorf("node %s cannot serve %s functions without a replica", w.cfg.NodeName, kindOf(spec))
	}
	art, failure, _ := w.fetchArtifact(ctx, spec)
	if failure != nil {
		return nil, errors.New(failure.Message)
	}
	fs := runtimeapi.FunctionSpec{MemoryBytes: spec.GetMemoryBytes(), Env: envList(spec.GetEnv()), Files: filesOf(spec.GetFiles())}
	if err := w.functionScratch(spec, &fs); err != nil { // storage.go
		return nil, err
	}
	return frt.PrepareFunction(ctx, art, fs)
}

// FunctionHandler is the function server, for a gateway in the same
// process to call directly (gateway.ServeLocally).
func (w *Worker) FunctionHandler() http.Handler { return w.funcs }

// FunctionAddr is the address the function server is bound to.
func (w *Worker) FunctionAddr() string { return w.funcLis.Addr().String() }

// serveFunctions runs the function server until ctx is done.
func (w *Worker) serveFunctions(ctx context.Context) error {
	srv := &http.Server{Handler: w.funcs, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), functionServerShutdown)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			_ = srv.Close()
		}
		w.funcs.Close(functionServerShutdown)
	}()
	// Only control-plane members call functions here, over mutual TLS.
	if err := srv.Serve(tls.NewListener(w.funcLis, auth.NodeServerTLS(w.id.pool, w.id.kp))); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("worker: function server on %s: %w", w.FunctionAddr(), err)
	}
	return nil
}

// startFunction prepares a function instance and adds it to the function
// server; the replica stands for the instance until it is stopped.
func (w *Worker) startFunction(ctx context.Context, in *instance, art runtimeapi.Artifact, spec *pb.WorkloadSpec) (runtimeapi.Instance, time.Time, runtimeapi.Exit, bool) {
	frt, ok := in.rt.(runtimeapi.FunctionRuntime)
	if !ok {
		msg := fmt.Sprintf("runtime %q on node %s cannot serve HTTP functions", in.rt.Name(), w.cfg.NodeName)
		return nil, time.Time{}, runtimeapi.Exit{Reason: runtimeapi.ReasonStartError, Message: msg, Permanent: true}, false
	}
	fs := runtimeapi.FunctionSpec{MemoryBytes: spec.GetMemoryBytes(), Env: envList(spec.GetEnv()), Files: filesOf(spec.GetFiles())}
	if err := w.functionScratch(spec, &fs); err != nil { // storage.go
		return nil, time.Time{}, runtimeapi.Exit{Reason: runtimeapi.ReasonStartError, Message: err.Error(), Permanent: true}, false
	}
	fn, err := frt.PrepareFunction(ctx, art, fs)
	if err != nil {
		return nil, time.Time{}, startExit(err), false
	}
	coldKey := in.rec.GetWorkload() + "/" + strconv.FormatInt(in.rec.GetGeneration(), 10)
	if len(spec.GetConfigFiles())+len(spec.GetSecretFiles()) > 0 {
		coldKey = "" // never started cold (prepareCold): its files are not kept past the replica
	}
	startedAt := w.clock.Now()
	rep, err := w.funcs.Add(funcserver.ReplicaSpec{
		ID:       in.id(),
		Workload: in.rec.GetWorkload(),
		Settings: httptrigger.Effective(spec.GetHttp()),
		Function: fn,
		Logs:     in.log,
		ColdKey:  coldKey,
		// Each request's sandbox may grow to the limit: it holds that much
		// of the node's memory while it runs.
		MemoryBytes: resources.MemoryRequest(spec),
	})
	if err != nil {
		fn.Close()
		return nil, time.Time{}, runtimeapi.Exit{Reason: runtimeapi.ReasonStartError, Message: err.Error()}, false
	}
	return rep, startedAt, runtimeapi.Exit{}, false
}
