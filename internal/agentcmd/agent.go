// Package agentcmd is the agent command: a worker alone, joined to a
// control plane. `wasmorch agent` and the slim `wasmorch-agent` binary
// (which links neither the control plane, etcd, nor the client commands)
// are this one command, so that both take the same flags and join the same
// way. The helpers the other long-running commands of cmd/wasmorch share
// with it (IO, RanUntil, StartError, ...) are here too.
package agentcmd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/internal/clierr"
	"github.com/wasmorch/wasmorch/internal/version"
	"github.com/wasmorch/wasmorch/wasmrt"
	"github.com/wasmorch/wasmorch/worker"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// NewCommand builds the agent command, named use ("agent" under wasmorch,
// "wasmorch-agent" as a binary of its own), offering containers with
// containers (nil: WebAssembly only). stopSignals restores the default
// signal handling once the agent is shutting down.
func NewCommand(use string, stopSignals func(), containers ContainerRuntime) *cobra.Command {
	var (
		dataDir, listen, name, containerd, logLevel, token, reservedMemory string
		servers, labels                                                    []string
		metricsAddr                                                        string
		maxInstances                                                       int32
	)
	var functionsListen, localHTTP string
	var disk DiskFlags
	var storage StorageFlags
	cmd := &cobra.Command{
		Use:   use,
		Short: "Run a worker and join it to a control plane",
		Long: `Run a worker alone and join it to a control plane given by --server (several
members separated by commas). The worker runs WebAssembly modules, and OCI
containers when containerd answers on --containerd-socket.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := NewLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			lbls, err := ParseLabels(labels)
			if err != nil {
				return err
			}
			wk := worker.DefaultConfig()
			if wk.ReservedMemoryBytes, err = ParseReservedMemory(reservedMemory); err != nil {
				return err
			}
			if err := disk.Apply(&wk); err != nil {
				return err
			}
			if err := storage.Apply(&wk); err != nil {
				return err
			}
			wk.NodeName = name
			wk.DataDir = dataDir
			wk.Servers = servers
			wk.ListenAddr = listen
			wk.FunctionListenAddr = functionsListen
			wk.LocalHTTPAddr = localHTTP
			wk.Labels = lbls
			wk.JoinToken = token
			wk.MaxInstances = maxInstances
			wk.Logger = logger.With("component", "worker")
			rt := wasmrt.DefaultConfig()
			rt.CacheDir = wk.CompileCacheDir()
			rt.Logger = logger.With("component", "wasmrt")
			d := IO{Out: cmd.OutOrStdout(), Terminal: IsTerminal(cmd.OutOrStdout()), Logger: logger, StopSignals: stopSignals}
			return Run(cmd.Context(), d, cmd.CommandPath(), wk, rt, containers, containerd, metricsAddr)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&servers, "server", []string{DefaultServer}, "control-plane API addresses HOST:PORT[,HOST:PORT...]")
	f.StringVar(&dataDir, "data-dir", ".wasmorch-agent", "directory for the worker's state (module and compile caches)")
	f.StringVar(&listen, "listen", "127.0.0.1:7071", "address HOST:PORT of the worker's own gRPC service (logs)")
	f.StringVar(&functionsListen, "functions-listen", worker.DefaultFunctionListenAddr, "address HOST:PORT of the worker's HTTP function server, which the gateways call")
	f.StringVar(&localHTTP, "local-http", "", "serve the functions placed on this node, and start cold those at zero replicas that it may run, to local clients at HOST:PORT, by their routes, in plain HTTP without the gateways' certificate, also while the control plane is out of reach; anyone who can reach it can call them, as through a gateway (default \"\": off)")
	f.StringVar(&name, "name", Hostname(), "node name")
	f.StringSliceVar(&labels, "labels", nil, "node labels k=v[,k=v...] asked for at the join, as far as the join token allows them (later starts do not change them: see 'wasmorch node label')")
	f.StringVar(&token, "token", "", "join token (from 'wasmorch token create'), needed on the first start only: the node's certificate is kept in --data-dir")
	containerdHelp := ContainerdHelp
	if containers == nil {
		containerdHelp += "; this binary runs WebAssembly only: 'wasmorch agent' also runs containers"
	}
	f.StringVar(&containerd, "containerd-socket", DefaultContainerdSocket, containerdHelp)
	f.StringVar(&reservedMemory, "reserved-memory", "", ReservedMemoryHelp)
	f.Int32Var(&maxInstances, "max-instances", worker.DefaultMaxInstances, "instances the node takes at most (its capacity in instances, as the scheduler fills it)")
	disk.Add(f)
	storage.Add(f)
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&metricsAddr, "metrics-addr", "", "serve the worker's Prometheus metrics (GET /metrics) at HOST:PORT; no authentication: keep it on loopback (default \"\": off)")
	return cmd
}

// Run runs the worker wk, with the Wasm runtime rtc and, when containers
// is not nil, containers on containerd's socket (if it answers), until ctx
// ends; its Prometheus metrics at metricsAddr unless it is empty. command
// names the command for hints ("wasmorch agent").
func Run(ctx context.Context, d IO, command string, wk worker.Config, rtc wasmrt.Config, containers ContainerRuntime, containerd, metricsAddr string) (err error) {
	var metrics *http.Server
	if metricsAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		wk.Registry = reg
		lis, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			return StartError("the agent's metrics", err, "choose another --metrics-addr")
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = metrics.Serve(lis) }()
		defer metrics.Close()
	}
	rt, err := wasmrt.New(ctx, rtc)
	if err != nil {
		return StartError("the WebAssembly runtime", err, "check --data-dir")
	}
	defer func() { err = errors.Join(err, CloseRuntime(ctx, rt)) }()
	var closeContainers func() error
	wk.Runtimes, closeContainers = WithContainers(ctx, d.Logger, containers, containerd, wk.DataDir, []runtimeapi.Runtime{rt})
	defer func() { err = errors.Join(err, closeContainers()) }()
	if err := wk.Validate(); err != nil {
		return &clierr.Error{What: "invalid agent settings: " + clierr.OneLine(err.Error()), Hint: fmt.Sprintf("see '%s --help'", command), Cause: err}
	}
	w, err := worker.New(ctx, wk)
	if err != nil {
		return StartError("the worker", err, "check --server, --listen and --data-dir")
	}
	defer func() { err = errors.Join(err, w.Close()) }() // Start closes it; this covers not getting there.
	fmt.Fprintf(d.Out, "%s %s is up\n  node:     %s (listening on %s; runtimes: %s)\n  servers:  %s\n  data dir: %s\n",
		command, version.Version, wk.NodeName, w.Addr(), RuntimeNames(wk.Runtimes), strings.Join(wk.Servers, ","), AbsPath(wk.DataDir))
	if addr := w.LocalHTTPAddr(); addr != "" {
		fmt.Fprintf(d.Out, "  local functions: http://%s (plain HTTP: this node's functions by their routes)\n", addr)
	}
	release := d.OnShutdown(ctx)
	defer release()
	return JoinError(RanUntil(ctx, "the worker", w.Start(ctx)))
}
