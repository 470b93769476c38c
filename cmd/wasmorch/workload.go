package main

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/manifest"
	"github.com/wasmorch/wasmorch/internal/version"
)

// versionTimeout bounds how long `version` waits for the server, which it
// only mentions if it answers.
const versionTimeout = 2 * time.Second

// oneName checks that a command got exactly one workload name.
func oneName(cmd *cobra.Command, args []string, example string) (string, error) {
	if len(args) != 1 {
		return "", cliclient.Errorf("e.g. '"+example+"'", "%s takes one workload name, got %d", cmd.Name(), len(args))
	}
	return args[0], nil
}

func newLogsCommand() *cobra.Command {
	var (
		o      cliclient.LogsOptions
		since  string
		server *string
	)
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a workload's output (stdout and stderr), and follow it",
		Long: `Print the output (stdout and stderr) that the workload's instances wrote, as
their workers kept it. When lines come from several instances, each starts
with [<instance id>]. With -f, go on printing what the instances write,
instances started later included, until Ctrl-C or until the workload is
deleted (a last line on stderr says so).`,
		Example: `  wasmorch logs hello
  wasmorch logs hello -f --tail 20
  wasmorch logs hello --since 5m --timestamps
  wasmorch logs hello --instance hello-x7k2p -f`,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := oneName(cmd, args, "wasmorch logs hello")
			if err != nil {
				return err
			}
			if since != "" {
				if o.Since, err = parseSince(since, time.Now()); err != nil {
					return err
				}
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			return client.Logs(cmd.Context(), name, o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	server = addServerFlag(cmd)
	f := cmd.Flags()
	f.BoolVarP(&o.Follow, "follow", "f", false, "after the output kept, print what the instances write until Ctrl-C")
	f.Int64Var(&o.TailLines, "tail", -1, "only the last N lines of each instance's output (0: none, with -f only new lines; -1: all that is kept)")
	f.Int64Var(&o.TailBytes, "tail-bytes", 0, "only the last BYTES of each instance's output (0: all that is kept)")
	f.StringVar(&since, "since", "", "only lines written in the last DURATION (5m, 1h) or since a time (RFC 3339)")
	f.StringVar(&o.Instance, "instance", "", "the output of this instance only (an ID from 'wasmorch get instances')")
	f.BoolVar(&o.Timestamps, "timestamps", false, "start each line with the time it was written (RFC 3339, UTC)")
	commandLineOnly(f, "follow", "tail", "tail-bytes", "since", "instance", "timestamps")
	return cmd
}

// parseSince reads --since: a duration back from now, or a time.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, cliclient.Errorf("e.g. --since 5m", "invalid --since %q: the duration must be positive", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	return time.Time{}, cliclient.Errorf("use a duration (30s, 5m, 2h) or a time (2026-12-04T10:00:00Z)", "invalid --since %q", s)
}

func newScaleCommand() *cobra.Command {
	var replicas int
	var server *string
	cmd := &cobra.Command{
		Use:     "scale NAME --replicas N",
		Short:   "Change a workload's number of replicas",
		Example: "  wasmorch scale hello --replicas 3",
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := oneName(cmd, args, "wasmorch scale hello --replicas 3")
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("replicas") {
				return cliclient.Errorf("e.g. 'wasmorch scale "+name+" --replicas 3'", "scale needs --replicas N")
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			w, err := client.Scale(cmd.Context(), name, replicas)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "scaled %s to %d replicas\n", w.Name, w.Replicas)
			return nil
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().IntVar(&replicas, "replicas", 0, "number of instances (0 or more; required)")
	commandLineOnly(cmd.Flags(), "replicas")
	return cmd
}

func newDeleteCommand() *cobra.Command {
	var (
		server *string
		files  []string
	)
	cmd := &cobra.Command{
		Use:   "delete NAME... | -f FILE|DIR",
		Short: "Delete workloads, or what manifests define, and stop their instances",
		Long: `Delete the workloads named, or with -f every workload, config, secret and
node group the manifests define (workloads first, so that the configs and
secrets they use can go too, node groups last). Each deletion is printed as it is done; one that fails does not stop
the others, and the command then fails.`,
		Example: `  wasmorch delete hello
  wasmorch delete hello greet ticker
  wasmorch delete -f testdata/app.yaml`,
		RunE: func(cmd *cobra.Command, args []string) error {
			var targets []manifest.Object
			switch {
			case len(files) > 0 && len(args) > 0:
				return cliclient.Errorf("e.g. 'wasmorch delete hello' or 'wasmorch delete -f app.yaml'", "delete takes names or -f, not both")
			case len(files) > 0:
				objs, err := readManifests(cmd, files)
				if err != nil {
					return err
				}
				order := map[string]int{manifest.KindWorkload: 0, manifest.KindSecret: 1, manifest.KindConfig: 2, manifest.KindNodeGroup: 3}
				sort.SliceStable(objs, func(i, j int) bool { return order[objs[i].Kind] < order[objs[j].Kind] })
				targets = objs
			case len(args) == 0:
				return cliclient.Errorf("e.g. 'wasmorch delete hello' or 'wasmorch delete -f app.yaml'", "delete takes workload names or -f FILE")
			default:
				for _, name := range args {
					targets = append(targets, manifest.Object{Kind: manifest.KindWorkload, Metadata: manifest.Metadata{Name: name}})
				}
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			var failed error
			failures := 0
			out := cmd.OutOrStdout()
			for _, o := range targets {
				name := o.Metadata.Name
				var err error
				switch o.Kind {
				case manifest.KindWorkload:
					err = client.Delete(cmd.Context(), name)
				case manifest.KindConfig:
					err = client.DeleteConfig(cmd.Context(), name)
				case manifest.KindSecret:
					err = client.DeleteSecret(cmd.Context(), name)
				case manifest.KindNodeGroup:
					_, err = client.DeleteNodeGroup(cmd.Context(), name) // cloud (nodegroups.go)
				}
				if err != nil {
					failed, failures = err, failures+1
					if len(targets) > 1 {
						fmt.Fprintf(cmd.ErrOrStderr(), "error: %s\n", cliclient.OneLine(err.Error()))
					}
					continue
				}
				if o.Kind == manifest.KindWorkload && len(files) == 0 {
					fmt.Fprintf(out, "deleted %s\n", name)
				} else {
					fmt.Fprintf(out, "deleted %s/%s\n", strings.ToLower(o.Kind), name)
				}
			}
			if failures > 0 && len(targets) > 1 {
				return cliclient.Errorf("see the errors above", "%d of %d deletions failed", failures, len(targets))
			}
			return failed
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "delete what this manifest (or directory of them; - for stdin) defines (repeatable)")
	commandLineOnly(cmd.Flags(), "filename")
	return cmd
}

func newVersionCommand() *cobra.Command {
	var server *string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the client's version, and the server's if it answers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "client: %s\n", version.Version)
			client, err := dial(cmd, *server)
			if err != nil {
				fmt.Fprintf(out, "server: unknown (%v)\n", err)
				return nil
			}
			defer client.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), versionTimeout)
			defer cancel()
			client.ConnectTimeout = versionTimeout
			v, member, err := client.ServerVersion(ctx)
			if err != nil {
				fmt.Fprintf(out, "server: unknown (%v)\n", err)
				return nil
			}
			fmt.Fprintf(out, "server: %s (member %s at %s)\n", v, member, client.Addr())
			return nil
		},
	}
	server = addServerFlag(cmd)
	return cmd
}
