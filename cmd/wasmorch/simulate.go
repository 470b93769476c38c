package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/worker/simulate"
)

// progressEvery is how often `simulate` looks at its nodes to print
// progress on stderr: when something changed, or after progressQuiet
// while some node has no session.
const (
	progressEvery = time.Second
	progressQuiet = 10 * time.Second
)

// newSimulateCommand is `wasmorch simulate`: hollow nodes for sizing a
// control plane.
func newSimulateCommand(stopSignals func()) *cobra.Command {
	cfg := simulate.DefaultConfig()
	var (
		memory, cpu, logLevel string
		labels                []string
	)
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Run simulated worker nodes against a control plane",
		Long: `Run --nodes hollow nodes in this process, as Kubernetes' kubemark does: each joins
the cluster with --token, keeps a session with the control plane, and reports
the instances assigned to it Starting, then Running, without running anything.
They carry the label simulated=true, and zone=z<i % --zones>. Their certificates
are kept in --data-dir, so that a restart needs no token. Ctrl-C stops them;
the control plane sees them NotReady once their heartbeats stop.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := newLogger(cmd.ErrOrStderr(), logLevel)
			if err != nil {
				return err
			}
			if cfg.MemoryBytes, err = parseCapacity(memory); err != nil {
				return cliclient.Errorf("use --memory like 64Gi, 512Mi or a number of bytes", "invalid --memory: %v", err)
			}
			if cfg.CPUMillis, err = cliclient.ParseCPU(cpu); err != nil {
				return cliclient.Errorf("use --cpu like 64 (cores) or 500m (millicores)", "invalid --cpu: %v", err)
			}
			if cfg.Labels, err = parseLabels(labels); err != nil {
				return err
			}
			cfg.Logger = logger.With("component", "simulate")
			sim, err := simulate.New(cfg)
			if err != nil {
				return configError(cmd, err)
			}
			return runSimulate(cmd.Context(), daemonIO{out: cmd.OutOrStdout(), logger: logger, stopSignals: stopSignals}, cmd.ErrOrStderr(), sim, cfg)
		},
	}
	f := cmd.Flags()
	f.StringSliceVar(&cfg.Servers, "server", []string{defaultServer}, "control-plane API addresses HOST:PORT[,HOST:PORT...]")
	f.StringVar(&cfg.JoinToken, "token", "", "join token (from 'wasmorch token create'), needed while a node has no certificate in --data-dir")
	f.IntVar(&cfg.Nodes, "nodes", 1000, "how many nodes to simulate")
	f.StringVar(&cfg.NamePrefix, "name-prefix", cfg.NamePrefix, "node names are PREFIX-0000, PREFIX-0001, ...")
	f.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "directory for the nodes' certificates, one subdirectory per node")
	f.Int32Var(&cfg.InstancesPerNode, "instances-per-node", cfg.InstancesPerNode, "instance slots each node registers (0: no limit)")
	f.StringVar(&memory, "memory", "64Gi", "memory each node registers")
	f.StringVar(&cpu, "cpu", "64", "CPU each node registers, in cores or millicores (500m)")
	f.StringSliceVar(&labels, "labels", nil, "labels k=v[,k=v...] of every node")
	f.IntVar(&cfg.Zones, "zones", cfg.Zones, "label node i zone=z<i % N>; 0: no zone label")
	f.StringVar(&logLevel, "log-level", "warn", "log level: debug, info, warn or error (each node's retries are logged at debug)")
	return cmd
}

func runSimulate(ctx context.Context, d daemonIO, progress io.Writer, sim *simulate.Simulator, cfg simulate.Config) error {
	servers := strings.Join(cfg.Servers, ",")
	fmt.Fprintf(d.out, "simulating %d nodes against %s\n", cfg.Nodes, servers)
	release := d.onShutdown(ctx)
	defer release()

	start := time.Now()
	done := make(chan struct{})
	printed := make(chan struct{})
	go func() {
		defer close(printed)
		reportProgress(done, progress, sim)
	}()
	err := sim.Run(ctx)
	close(done)
	<-printed
	if st := sim.Stats(); st.Joined > 0 {
		fmt.Fprintf(d.out, "simulated %d nodes for %s: %d joined (%d with the token), %d sessions, %d instances assigned at the end, %d statuses reported in %d calls\n",
			st.Nodes, time.Since(start).Round(time.Second), st.Joined, st.Joins, st.Sessions, st.Instances, st.Statuses, st.Reports)
	}
	if err != nil {
		return &cliclient.Error{What: "simulating nodes against " + servers + ": " + cliclient.OneLine(err.Error()), Hint: simulateHint(err), Cause: err}
	}
	return nil
}

// simulateHint says what to do about an error that stopped the
// simulation.
func simulateHint(err error) string {
	switch {
	case errors.Is(err, errdefs.ErrUnauthenticated) || errors.Is(err, errdefs.ErrPermissionDenied) || errors.Is(err, auth.ErrPinMismatch):
		return "pass a valid --token (made on a server with 'wasmorch token create'), and check --server"
	case errors.Is(err, errdefs.ErrFailedPrecondition):
		return "pass --token, or choose another --name-prefix if nodes of these names are running"
	case errors.Is(err, errdefs.ErrInvalidArgument):
		return "check --labels and --name-prefix"
	}
	return "check --server and --data-dir"
}

// reportProgress prints a line on w whenever the number of joined or
// registered nodes changed, and every progressQuiet while some node has
// no session, until done is closed.
func reportProgress(done <-chan struct{}, w io.Writer, sim *simulate.Simulator) {
	t := time.NewTicker(progressEvery)
	defer t.Stop()
	var last simulate.Stats
	var lastAt time.Time
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			st := sim.Stats()
			changed := st.Joined != last.Joined || st.Registered != last.Registered
			if !changed && (st.Registered == st.Nodes || now.Sub(lastAt) < progressQuiet) {
				continue
			}
			line := fmt.Sprintf("joined %d/%d nodes, %d registered", st.Joined, st.Nodes, st.Registered)
			if st.Registered < st.Nodes && st.LastError != "" {
				line += " (last error: " + cliclient.OneLine(st.LastError) + ")"
			}
			fmt.Fprintln(w, line)
			last, lastAt = st, now
		}
	}
}
