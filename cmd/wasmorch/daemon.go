package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"

	"github.com/wasmorch/wasmorch/controlplane"
	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/diskspace"
	"github.com/wasmorch/wasmorch/internal/version"
	"github.com/wasmorch/wasmorch/wasmrt"
	"github.com/wasmorch/wasmorch/worker"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

const (
	defaultContainerdSocket = "/run/containerd/containerd.sock"
	// runtimeCloseTimeout bounds how long the Wasm runtime may take to stop
	// its instances once the worker has returned.
	runtimeCloseTimeout = 10 * time.Second
)

func hostname() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return strings.ToLower(h)
	}
	return "wasmorch"
}

// newUpCommand is `wasmorch up`: a control-plane member and a worker in
// one process, the worker joined to the member over the real gRPC API.
func newUpCommand(stopSignals func()) *cobra.Command {
	cp := controlplane.DefaultConfig()
	var containerd, nodeName, logLevel, reservedMemory string
	var disk diskFlags
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
			if err := disk.apply(&wk); err != nil {
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
	disk.add(f)
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
	addDebugFlag(cmd, &cp)
	return cmd
}

// newAgentCommand is `wasmorch agent`: a worker alone, joined to a
// control plane.
func newAgentCommand(stopSignals func()) *cobra.Command {
	var (
		dataDir, listen, name, containerd, logLevel, token, reservedMemory string
		servers, labels                                                    []string
		metricsAddr                                                        string
	)
	var functionsListen string
	var disk diskFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a worker and join it to a control plane",
		Long: `Run a worker alone and join it to a control plane given by --server (several
members separated by commas). The worker runs WebAssembly modules, and OCI
containers when containerd answers on --containerd-socket.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			lbls, err := parseLabels(labels)
			if err != nil {
				return err
			}
			wk := worker.DefaultConfig()
			if wk.ReservedMemoryBytes, err = parseReservedMemory(reservedMemory); err != nil {
				return err
			}
			if err := disk.apply(&wk); err != nil {
				return err
			}
			wk.NodeName = name
			wk.DataDir = dataDir
			wk.Servers = servers
			wk.ListenAddr = listen
			wk.FunctionListenAddr = functionsListen
			wk.Labels = lbls
			wk.JoinToken = token
			wk.Logger = logger.With("component", "worker")
			rt := wasmrt.DefaultConfig()
			rt.CacheDir = wk.CompileCacheDir()
			rt.Logger = logger.With("component", "wasmrt")
			return runAgent(cmd.Context(), daemonIO{out: cmd.OutOrStdout(), terminal: isTerminal(cmd.OutOrStdout()), logger: logger, stopSignals: stopSignals}, wk, rt, containerd, metricsAddr)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&servers, "server", []string{defaultServer}, "control-plane API addresses HOST:PORT[,HOST:PORT...]")
	f.StringVar(&dataDir, "data-dir", ".wasmorch-agent", "directory for the worker's state (module and compile caches)")
	f.StringVar(&listen, "listen", "127.0.0.1:7071", "address HOST:PORT of the worker's own gRPC service (logs)")
	f.StringVar(&functionsListen, "functions-listen", worker.DefaultFunctionListenAddr, "address HOST:PORT of the worker's HTTP function server, which the gateways call")
	f.StringVar(&name, "name", hostname(), "node name")
	f.StringSliceVar(&labels, "labels", nil, "node labels k=v[,k=v...] asked for at the join, as far as the join token allows them (later starts do not change them: see 'wasmorch node label')")
	f.StringVar(&token, "token", "", "join token (from 'wasmorch token create'), needed on the first start only: the node's certificate is kept in --data-dir")
	f.StringVar(&containerd, "containerd-socket", defaultContainerdSocket, containerdHelp)
	f.StringVar(&reservedMemory, "reserved-memory", "", reservedMemoryHelp)
	disk.add(f)
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&metricsAddr, "metrics-addr", "", "serve the worker's Prometheus metrics (GET /metrics) at HOST:PORT; no authentication: keep it on loopback (default \"\": off)")
	return cmd
}

// addMetricsFlag adds --metrics-addr to up and server.
func addMetricsFlag(cmd *cobra.Command, cp *controlplane.Config) {
	cmd.Flags().StringVar(&cp.MetricsAddr, "metrics-addr", cp.MetricsAddr, "serve Prometheus metrics (GET /metrics) at HOST:PORT, apart from the gateway; no authentication: keep it on loopback (\"\": off)")
}

const reservedMemoryHelp = "memory kept for the system and wasmorch itself, e.g. 2Gi; instances and function requests share the rest (the node's allocatable memory). Default: a tenth of the node's memory, at least 256Mi; 0: none"

// parseReservedMemory reads --reserved-memory into
// worker.Config.ReservedMemoryBytes: "" is the default (0), "0" none (-1).
func parseReservedMemory(s string) (int64, error) {
	switch strings.TrimSpace(s) {
	case "":
		return 0, nil
	case "0":
		return -1, nil
	}
	n, err := parseCapacity(s)
	if err != nil {
		return 0, cliclient.Errorf("use --reserved-memory like 2Gi, 512Mi, a number of bytes, or 0 for none", "invalid --reserved-memory: %v", err)
	}
	return n, nil
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
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			d.stopSignals()
			d.logger.Info("shutting down; press Ctrl-C again to stop at once")
		case <-done:
		}
	}()
	return func() { close(done) }
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
	try := "wasmorch deploy testdata/hello.wasm --name hello"
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

func runAgent(ctx context.Context, d daemonIO, wk worker.Config, rtc wasmrt.Config, containerd, metricsAddr string) (err error) {
	var metrics *http.Server
	if metricsAddr != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		wk.Registry = reg
		lis, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			return startError("the agent's metrics", err, "choose another --metrics-addr")
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = metrics.Serve(lis) }()
		defer metrics.Close()
	}
	rt, err := wasmrt.New(ctx, rtc)
	if err != nil {
		return startError("the WebAssembly runtime", err, "check --data-dir")
	}
	defer func() { err = errors.Join(err, closeRuntime(ctx, rt)) }()
	var closeContainers func() error
	wk.Runtimes, closeContainers = withContainers(ctx, d.logger, containerd, wk.DataDir, []runtimeapi.Runtime{rt})
	defer func() { err = errors.Join(err, closeContainers()) }()
	if err := wk.Validate(); err != nil {
		return &cliclient.Error{What: "invalid agent settings: " + cliclient.OneLine(err.Error()), Hint: "see 'wasmorch agent --help'", Cause: err}
	}
	w, err := worker.New(ctx, wk)
	if err != nil {
		return startError("the worker", err, "check --server, --listen and --data-dir")
	}
	defer func() { err = errors.Join(err, w.Close()) }() // Start closes it; this covers not getting there.
	fmt.Fprintf(d.out, "wasmorch agent %s is up\n  node:     %s (listening on %s; runtimes: %s)\n  servers:  %s\n  data dir: %s\n",
		version.Version, wk.NodeName, w.Addr(), runtimeNames(wk.Runtimes), strings.Join(wk.Servers, ","), absPath(wk.DataDir))
	release := d.onShutdown(ctx)
	defer release()
	return joinError(ranUntil(ctx, "the worker", w.Start(ctx)))
}

// ranUntil judges how a component's Start returned: stopping because ctx
// ended is a clean shutdown; stopping on its own is an error.
func ranUntil(ctx context.Context, what string, err error) error {
	switch {
	case ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)):
		return nil
	case err == nil:
		return &cliclient.Error{What: what + " stopped on its own", Hint: "see the log above"}
	}
	return &cliclient.Error{What: what + " failed: " + cliclient.OneLine(err.Error()), Hint: "see the log above", Cause: err}
}

func startError(what string, err error, hint string) error {
	if low := (*diskspace.LowError)(nil); errors.As(err, &low) {
		hint = "free space on that disk, or give --data-dir a directory on another"
	}
	return &cliclient.Error{What: "cannot start " + what + ": " + cliclient.OneLine(err.Error()), Hint: hint, Cause: err}
}

func configError(cmd *cobra.Command, err error) error {
	return &cliclient.Error{
		What:  "invalid settings: " + cliclient.OneLine(strings.ReplaceAll(err.Error(), "\n", "; ")),
		Hint:  fmt.Sprintf("see '%s --help'", cmd.CommandPath()),
		Cause: err,
	}
}

func closeRuntime(ctx context.Context, rt *wasmrt.Runtime) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), runtimeCloseTimeout)
	defer cancel()
	return rt.Close(ctx)
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

func absPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// newLogger logs as text to w at the named level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, cliclient.Errorf("use --log-level debug, info, warn or error", "invalid --log-level %q", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl})), nil
}

// parseLabels parses k=v items, each of which may itself hold several
// comma-separated pairs (as a config file or variable may give them).
func parseLabels(items []string) (map[string]string, error) {
	labels := map[string]string{}
	for _, item := range items {
		for _, pair := range strings.Split(item, ",") {
			pair = strings.TrimSpace(pair)
			if pair == "" {
				continue
			}
			k, v, ok := strings.Cut(pair, "=")
			if !ok || strings.TrimSpace(k) == "" {
				return nil, cliclient.Errorf("use --labels key=value[,key=value...]", "invalid label %q", pair)
			}
			labels[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return labels, nil
}
