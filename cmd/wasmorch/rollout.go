package main

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/controlplane"
	"github.com/wasmorch/wasmorch/controlplane/workloads"
	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/cliout"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// rollouts: `wasmorch rollout status|history|undo|promote|restart`.
func newRolloutCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rollout",
		Short: "Follow, list and undo a workload's rollouts",
		Long: `Every change to a workload's spec (anything but its replica count) is a new
generation with an immutable revision, rolled out in a rolling update bounded by
the workload's max surge and max unavailable (see 'wasmorch deploy --help'). A
function deployed with --canary first gives the new generation that share of its
traffic, until 'wasmorch rollout promote' (or its --canary-duration).`,
	}
	cmd.AddCommand(newRolloutStatusCommand(), newRolloutHistoryCommand(), newRolloutUndoCommand(), newRolloutPromoteCommand(),
		newRolloutRestartCommand())
	return cmd
}

func newRolloutStatusCommand() *cobra.Command {
	var (
		server  *string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "status NAME",
		Short: "Wait until a workload's rollout is complete",
		Long: `Wait until every replica of the workload's current generation is ready and no
instance of an older generation is left, showing progress (a bar rewritten in place on a
terminal, a line per change otherwise). Fails with the reason if an instance of
the current generation fails, or when --timeout passes. A canary (deploy --canary)
that waits for 'wasmorch rollout promote' ends the wait once its replicas are
ready; one with a --canary-duration is followed until it is promoted and rolled
out.`,
		Example: "  wasmorch rollout status hello",
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := oneName(cmd, args, "wasmorch rollout status hello")
			if err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			progress := cliout.NewStderrProgress()
			r, err := client.RolloutStatus(cmd.Context(), name, timeout, progress.Show)
			progress.Done()
			if err != nil {
				return err
			}
			if r.Canary != nil {
				fmt.Fprintln(cmd.OutOrStdout(), r.Canary.Summary(name))
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s rolled out (generation %d): %d/%d ready\n", name, r.Generation, r.Ready, r.Replicas)
			return nil
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", cliclient.DefaultDeployTimeout, "how long to wait for the rollout to complete")
	return cmd
}

func newRolloutHistoryCommand() *cobra.Command {
	var server *string
	cmd := &cobra.Command{
		Use:     "history NAME",
		Short:   "List a workload's kept revisions",
		Example: "  wasmorch rollout history hello",
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := oneName(cmd, args, "wasmorch rollout history hello")
			if err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			revs, current, err := client.History(cmd.Context(), name)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 3, ' ', 0)
			// registry: revisions deployed from a registry show the
			// reference and the digest it resolved to.
			sourced := slices.ContainsFunc(revs, func(r *wasmorchv1.Revision) bool { return r.GetSpec().GetSourceReference() != "" })
			if sourced {
				fmt.Fprintln(tw, "REVISION\tAGE\tSOURCE\tDIGEST\tCHANGE-CAUSE")
			} else {
				fmt.Fprintln(tw, "REVISION\tAGE\tCHANGE-CAUSE")
			}
			now := time.Now()
			for _, r := range revs {
				rev := fmt.Sprint(r.GetGeneration())
				if r.GetGeneration() == current {
					rev += " (current)"
				}
				cause := r.GetChangeCause()
				if cause == "" {
					cause = "<none>"
				}
				age := cliout.Age(now, time.Unix(0, r.GetCreatedUnixNano()))
				if sourced {
					src, digest := r.GetSpec().GetSourceReference(), r.GetSpec().GetSourceDigest()
					if src == "" {
						src, digest = "-", r.GetSpec().GetModuleDigest()
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", rev, age, src, digest, strings.ReplaceAll(cause, "\t", " "))
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", rev, age, strings.ReplaceAll(cause, "\t", " "))
			}
			return tw.Flush()
		},
	}
	server = addServerFlag(cmd)
	return cmd
}

func newRolloutUndoCommand() *cobra.Command {
	var (
		server *string
		to     int64
	)
	cmd := &cobra.Command{
		Use:   "undo NAME [--to-revision N]",
		Short: "Roll a workload back to an earlier revision",
		Long: `Apply an earlier revision's spec (the one before the current generation, or
--to-revision N) as a new generation, keeping the current replica count, and roll
it out like any other change. Follow it with 'wasmorch rollout status NAME'.`,
		Example: "  wasmorch rollout undo hello\n  wasmorch rollout undo hello --to-revision 3",
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := oneName(cmd, args, "wasmorch rollout undo hello")
			if err != nil {
				return err
			}
			if to < 0 {
				return cliclient.Errorf("see 'wasmorch rollout history "+name+"'", "invalid --to-revision %d", to)
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			resp, err := client.Undo(cmd.Context(), name, to)
			if err != nil {
				return err
			}
			if !resp.GetChanged() {
				fmt.Fprintf(cmd.OutOrStdout(), "%s unchanged: that revision's spec is the current one (generation %d)\n", name, resp.GetWorkload().GetGeneration())
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "rolled back %s: generation %d\n", name, resp.GetWorkload().GetGeneration())
			return nil
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().Int64Var(&to, "to-revision", 0, "the revision to return to (default: the one before the current generation)")
	return cmd
}

func newRolloutRestartCommand() *cobra.Command {
	var server *string
	cmd := &cobra.Command{
		Use:   "restart NAME",
		Short: "Replace every instance of a workload in a rolling update",
		Long: `Replace every instance of a workload with a new one of the same spec, in a
rolling update bounded by its max surge and max unavailable, like 'kubectl
rollout restart': a new generation and revision (change cause "rollout restart"),
never a canary. Follow it with 'wasmorch rollout status NAME'.`,
		Example: "  wasmorch rollout restart hello",
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := oneName(cmd, args, "wasmorch rollout restart hello")
			if err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			resp, err := client.Restart(cmd.Context(), name)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restarting %s: generation %d replaces every instance; follow it with 'wasmorch rollout status %s'\n",
				name, resp.GetWorkload().GetGeneration(), name)
			return nil
		},
	}
	server = addServerFlag(cmd)
	return cmd
}

// canary.go: rollout promote.
func newRolloutPromoteCommand() *cobra.Command {
	var server *string
	cmd := &cobra.Command{
		Use:   "promote NAME",
		Short: "Promote a function's canary: roll the new generation out to every replica",
		Long: `End the canary phase of a function deployed with --canary: the new generation
stops sharing the traffic with the old one, and the rolling update replaces the
old replicas. Follow it with 'wasmorch rollout status NAME'. Fails if no canary
is waiting for promotion.`,
		Example: "  wasmorch rollout promote greet",
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := oneName(cmd, args, "wasmorch rollout promote greet")
			if err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			wl, err := client.Promote(cmd.Context(), name)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "promoted %s: generation %d rolls out to every replica\n", name, wl.GetGeneration())
			return nil
		},
	}
	server = addServerFlag(cmd)
	return cmd
}

// addRolloutSettings adds the control plane's rollout settings to up and
// server.
func addRolloutSettings(cmd *cobra.Command, cp *controlplane.Config) {
	cmd.Flags().IntVar(&cp.RevisionHistoryLimit, "revision-history-limit", workloads.DefaultRevisionHistoryLimit, "revisions kept per workload for 'wasmorch rollout history' and 'undo'")
	cmd.Flags().IntVar(&cp.RolloutFailureRestarts, "rollout-failure-restarts", cp.RolloutFailureRestarts, "roll a rollout back automatically when an instance of the new generation has restarted this many times (0: never)")
	cmd.Flags().IntVar(&cp.RolloutMaxErrorPercent, "rollout-max-error-rate", cp.RolloutMaxErrorPercent, "roll a function's rollout back automatically when its new generation fails more than this percentage of its requests (at least 20), and more than twice the rate of the old one (0: never)")
	cmd.Flags().DurationVar(&cp.ProgressDeadline, "progress-deadline", cp.ProgressDeadline, "roll a rollout back automatically when an instance of the new generation is not placed, not started by its node, or still preparing this long after it was created (0: never)")
	cmd.Flags().DurationVar(&cp.RolloutMinReady, "rollout-min-ready", controlplane.DefaultMinReady, "how long a new instance must run before a rolling update lets an old one go")
}
