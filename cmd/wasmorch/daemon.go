package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/wasmorch/wasmorch/controlplane"
	"github.com/wasmorch/wasmorch/internal/agentcmd"
	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/version"
	"github.com/wasmorch/wasmorch/wasmrt"
	"github.com/wasmorch/wasmorch/worker"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// newUpCommand is `wasmorch up`: a control-plane member and a worker in
// one process, the worker joined to the member over the real gRPC API.
func newUpCommand(stopSignals func()) *cobra.Command {
	cp := controlplane.DefaultConfig()
	var containerd, nodeName, logLevel, reservedMemory string
	var disk diskFlags
	var storage agentcmd.StorageFlags
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a control plane and a worker in this process",
		Long: `Run a control-plane member and a worker in one foreground process, with all
state in one data directory. Ctrl-C (SIGINT or SIGTERM) shuts it down cleanly;
starting it again on the same data directory brings every workload back.

The worker runs WebAssembly modules, and OCI containers when containerd answers
on --containerd-socket.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			cp.Name = nodeName
			cp.Logger = logger // controlplane adds its own component attribute
			cp.UserCredentialsDir = userCredentialsDir()
			if err := cp.Validate(); err != nil {
				return configError(cmd, err)
			}
			wk := worker.DefaultConfig()
			if wk.ReservedMemoryBytes, err = parseReservedMemory(reservedMemory); err != nil {
				return err
			}
			if err := disk.Apply(&wk); err != nil {
				return err
			}
			if err := storage.Apply(&wk); err != nil {
				return err
			}
			wk.NodeName = nodeName
			wk.DataDir = filepath.Join(cp.DataDir, "worker")
			wk.ListenAddr = "127.0.0.1:0"
			wk.Logger = logger.With("component", "worker")
			rt := wasmrt.DefaultConfig()
			rt.CacheDir = wk.CompileCacheDir()
			rt.Logger = logger.With("component", "wasmrt")
			return runUp(cmd.Context(), daemonIO{out: cmd.OutOrStdout(), terminal: isTerminal(cmd.OutOrStdout()), logger: logger, stopSignals: stopSignals}, cp, wk, rt, containerd)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cp.DataDir, "data-dir", cp.DataDir, "directory for all state (etcd data, module and compile caches)")
	f.StringVar(&cp.APIAddr, "api", cp.APIAddr, "gRPC API listen address HOST:PORT (clients use it as --server)")
	f.StringVar(&cp.HTTPAddr, "http", cp.HTTPAddr, "HTTP gateway, /healthz and /readyz listen address HOST:PORT")
	addMetricsFlag(cmd, &cp)
	f.StringVar(&containerd, "containerd-socket", defaultContainerdSocket, containerdHelp)
	f.StringVar(&nodeName, "node-name", hostname(), "name of this control-plane member and of its worker node")
	f.StringVar(&reservedMemory, "reserved-memory", "", reservedMemoryHelp)
	disk.Add(f)
	storage.Add(f)
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	addCertLifetimeFlag(cmd, &cp)
	addRolloutSettings(cmd, &cp)
	addBlobSettings(cmd, &cp)
	addDebugFlag(cmd, &cp)
	return cmd
}

// newServerCommand is `wasmorch server`: a control-plane member alone.
func newServerCommand(stopSignals func()) *cobra.Command {
	cp := controlplane.DefaultConfig()
	var logLevel string
	var initNew bool
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a control-plane member alone",
		Long: `Run a control-plane member alone: the API, the embedded etcd, the scheduler and
controllers, and the HTTP gateway. Workers join it with 'wasmorch agent --server'.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			cp.Logger = logger // controlplane adds its own component attribute
			cp.UserCredentialsDir = userCredentialsDir()
			if initNew && len(cp.Join) > 0 {
				return cliclient.Errorf("use --init for the first member and --join for the others", "--init starts a new cluster; it cannot be combined with --join")
			}
			if err := cp.Validate(); err != nil {
				return configError(cmd, err)
			}
			return runServer(cmd.Context(), daemonIO{out: cmd.OutOrStdout(), terminal: isTerminal(cmd.OutOrStdout()), logger: logger, stopSignals: stopSignals}, cp)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cp.DataDir, "data-dir", cp.DataDir, "directory for the member's state (etcd data)")
	f.StringVar(&cp.APIAddr, "api", cp.APIAddr, "gRPC API listen address HOST:PORT")
	f.StringVar(&cp.HTTPAddr, "http", cp.HTTPAddr, "HTTP gateway, /healthz and /readyz listen address HOST:PORT")
	addMetricsFlag(cmd, &cp)
	f.StringVar(&cp.Name, "name", hostname(), "member name")
	f.StringVar(&cp.EtcdPeerAddr, "peer", cp.EtcdPeerAddr, "etcd peer listen and advertise address HOST:PORT; other members reach this one there (a fixed port when there are several members)")
	f.BoolVar(&initNew, "init", false, "start a new cluster with this member (the default without --join or --initial-cluster)")
	f.StringSliceVar(&cp.Join, "join", nil, "API addresses HOST:PORT[,...] of running members: join their cluster on first start")
	f.StringVar(&cp.InitialCluster, "initial-cluster", "", "static membership of a new cluster, NAME=https://HOST:PORT[,...] (etcd's --initial-cluster), every member started with the same list and --ca-dir")
	f.StringVar(&cp.CADir, "ca-dir", "", "directory holding the cluster CA (from 'wasmorch ca create') for a member of --initial-cluster, copied into --data-dir on the first start")
	f.StringVar(&cp.JoinToken, "token", "", "server join token for --join (from 'wasmorch token create --role server' on a running member)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	addCertLifetimeFlag(cmd, &cp)
	addRolloutSettings(cmd, &cp)
	addBlobSettings(cmd, &cp)
	addCloudFlags(cmd, &cp)
	addDebugFlag(cmd, &cp)
	return cmd
}

// addMetricsFlag adds --metrics-addr to up and server.
func addMetricsFlag(cmd *cobra.Command, cp *controlplane.Config) {
	cmd.Flags().StringVar(&cp.MetricsAddr, "metrics-addr", cp.MetricsAddr, "serve Prometheus metrics (GET /metrics) at HOST:PORT, apart from the gateway; no authentication: keep it on loopback (\"\": off)")
}

// daemonIO is what a long-running command prints to and how it hands
// signals back once it is shutting down.
type daemonIO struct {
	out         io.Writer
	terminal    bool // out is a terminal, not a log
	logger      *slog.Logger
	stopSignals func()
}

// onShutdown lets a second signal kill the process once ctx is done, and
// says so.
func (d daemonIO) onShutdown(ctx context.Context) (release func()) {
	return agentcmd.IO{Logger: d.logger, StopSignals: d.stopSignals}.OnShutdown(ctx)
}

func runUp(ctx context.Context, d daemonIO, cp controlplane.Config, wk worker.Config, rtc wasmrt.Config, containerd string) (err error) {
	srv, err := controlplane.New(ctx, cp)
	if err != nil {
		return startError("the control plane", err, "is another 'wasmorch up' or 'wasmorch server' running? choose other --api/--http/--metrics-addr addresses or another --data-dir")
	}
	defer func() { err = errors.Join(err, srv.Close()) }()

	rt, err := wasmrt.New(ctx, rtc)
	if err != nil {
		return startError("the WebAssembly runtime", err, "check --data-dir")
	}
	defer func() { err = errors.Join(err, closeRuntime(ctx, rt)) }()

	wk.Servers = []string{dialable(srv.APIAddr())}
	wk.Registry = srv.MetricsRegistry() // one /metrics for both
	// The worker in this process gets its node certificate straight from
	// the member's CA, as an agent gets one by joining.
	if err := srv.IssueNodeCredential(wk.PKIDir(), wk.NodeName); err != nil {
		return startError("the worker", err, "check --data-dir")
	}
	var closeContainers func() error
	wk.Runtimes, closeContainers = withContainers(ctx, d.logger, containerd, wk.DataDir, []runtimeapi.Runtime{rt})
	defer func() { err = errors.Join(err, closeContainers()) }()
	if err := wk.Validate(); err != nil {
		return startError("the worker", err, "check the flags")
	}
	w, err := worker.New(ctx, wk)
	if err != nil {
		return startError("the worker", err, "check --data-dir and --node-name")
	}
	defer func() { err = errors.Join(err, w.Close()) }() // Start closes it; this covers not getting there.
	// One process: the gateway calls the worker's function server directly.
	srv.ServeFunctionsLocally(wk.NodeName, w.FunctionHandler())

	server := dialable(srv.APIAddr())
	try := "wasmorch deploy testdata/hello.wasm --name hello --restart on-failure"
	if server != defaultServer {
		try += " --server " + server
	}
	fmt.Fprintf(d.out, "wasmorch %s is up\n  API:      %s\n  gateway:  http://%s\n  data dir: %s\n  node:     %s (worker at %s; runtimes: %s)\n",
		version.Version, server, srv.HTTPAddr(), absPath(cp.DataDir), wk.NodeName, w.Addr(), runtimeNames(wk.Runtimes))
	fmt.Fprint(d.out, dashboardLine(srv))
	printCredentials(ctx, d, srv, cp, server)
	fmt.Fprintf(d.out, "try: %s\n", try)

	release := d.onShutdown(ctx)
	defer release()

	// The control plane outlives the worker, so that the worker can report
	// the instances it stopped on its way out.
	g, gctx := errgroup.WithContext(ctx)
	serverCtx, stopServer := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServer()
	g.Go(func() error {
		defer stopServer()
		return ranUntil(gctx, "the worker", w.Start(gctx))
	})
	g.Go(func() error {
		return ranUntil(serverCtx, "the control plane", srv.Start(serverCtx))
	})
	return g.Wait()
}

func runServer(ctx context.Context, d daemonIO, cp controlplane.Config) (err error) {
	srv, err := controlplane.New(ctx, cp)
	if err != nil {
		return startError("the control plane", err, "is another wasmorch server running? choose other --api/--http/--metrics-addr addresses or another --data-dir")
	}
	defer func() { err = errors.Join(err, srv.Close()) }()
	server := dialable(srv.APIAddr())
	fmt.Fprintf(d.out, "wasmorch server %s is up\n  API:      %s\n  gateway:  http://%s\n  data dir: %s\n  member:   %s\n",
		version.Version, server, srv.HTTPAddr(), absPath(cp.DataDir), cp.Name)
	fmt.Fprint(d.out, dashboardLine(srv))
	printCredentials(ctx, d, srv, cp, server)
	release := d.onShutdown(ctx)
	defer release()
	return ranUntil(ctx, "the control plane", srv.Start(ctx))
}

func configError(cmd *cobra.Command, err error) error {
	return &cliclient.Error{
		What:  "invalid settings: " + cliclient.OneLine(strings.ReplaceAll(err.Error(), "\n", "; ")),
		Hint:  fmt.Sprintf("see '%s --help'", cmd.CommandPath()),
		Cause: err,
	}
}

// dialable turns a listen address into one to connect to: a wildcard host
// (0.0.0.0, ::) becomes loopback.
func dialable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return addr
}
