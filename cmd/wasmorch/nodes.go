package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/controlplane/api"
	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/cliout"
)

// oneNode checks that a command got exactly one node name.
func oneNode(cmd *cobra.Command, args []string, example string) (string, error) {
	if len(args) != 1 {
		return "", cliclient.Errorf("e.g. '"+example+"'", "%s takes one node name, got %d", cmd.CommandPath(), len(args))
	}
	return args[0], nil
}

func newCordonCommand() *cobra.Command {
	return newMarkNodeCommand("cordon", "Stop placing new instances on a node",
		`Mark a node unschedulable: the instances it runs stay, new ones go elsewhere.`, "cordoned",
		func(ctx context.Context, c *cliclient.Client, name string) error {
			_, err := c.Cordon(ctx, name)
			return err
		})
}

func newUncordonCommand() *cobra.Command {
	return newMarkNodeCommand("uncordon", "Allow instances on a node again (ends a drain)", "", "uncordoned",
		func(ctx context.Context, c *cliclient.Client, name string) error {
			_, err := c.Uncordon(ctx, name)
			return err
		})
}

// newMarkNodeCommand is a command that changes one node's schedulability
// (cordon, uncordon) and says so.
func newMarkNodeCommand(verb, short, long, done string, call func(context.Context, *cliclient.Client, string) error) *cobra.Command {
	var server *string
	cmd := &cobra.Command{
		Use:   verb + " NODE",
		Short: short,
		Long:  long,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := oneNode(cmd, args, "wasmorch "+verb+" edge-1")
			if err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			if err := call(cmd.Context(), client, name); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "node %s %s\n", name, done)
			return nil
		},
	}
	server = addServerFlag(cmd)
	return cmd
}

func newDrainCommand() *cobra.Command {
	var (
		server  *string
		timeout time.Duration
		noWait  bool
	)
	cmd := &cobra.Command{
		Use:   "drain NODE",
		Short: "Move every instance off a node, keeping workloads available",
		Long: `Cordon a node and move its instances to other nodes. Each instance is removed
only once a replacement runs elsewhere, so a workload stays at its replica count
wherever the cluster has room; an instance whose replacement cannot be placed
stays where it is (see 'wasmorch get instances' for why). drain waits until the
node is empty; 'wasmorch uncordon NODE' ends a drain.`,
		Example: "  wasmorch drain vm-1",
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := oneNode(cmd, args, "wasmorch drain vm-1")
			if err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			wait := timeout
			if noWait {
				wait = 0
			}
			progress := cliout.NewStderrProgress()
			_, err = client.Drain(cmd.Context(), name, wait, progress.Update)
			progress.Done()
			if err != nil {
				return err
			}
			if noWait {
				fmt.Fprintf(cmd.OutOrStdout(), "node %s draining; see 'wasmorch describe node %s'\n", name, name)
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "node %s drained\n", name)
			}
			return nil
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", cliclient.DefaultDrainTimeout, "how long to wait for the node to empty")
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the drain has started")
	return cmd
}

func newNodeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Manage nodes (rm, label)",
	}
	var (
		server *string
		force  bool
	)
	rm := &cobra.Command{
		Use:     "rm NODE",
		Aliases: []string{"remove"},
		Short:   "Forget a node and revoke its certificates; its instances are replaced elsewhere",
		Long: `Remove a node from the cluster and revoke every certificate it holds: its agent,
running or not, is refused from then on and must join again with a join token.
A Ready node is refused unless --force: drain it first, so that its instances
move while it still runs them.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := oneNode(cmd, args, "wasmorch node rm edge-1")
			if err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			held, err := client.RemoveNode(cmd.Context(), name, force)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "node %s removed", name)
			if held > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "; its %d instance(s) are being replaced", held)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	server = addServerFlag(rm)
	rm.Flags().BoolVar(&force, "force", false, "also remove a Ready node")
	commandLineOnly(rm.Flags(), "force")
	cmd.AddCommand(rm, newNodeLabelCommand())
	return cmd
}

// newNodeLabelCommand is `wasmorch node label NODE k=v... k-...`.
func newNodeLabelCommand() *cobra.Command {
	var server *string
	cmd := &cobra.Command{
		Use:   "label NODE KEY=VALUE... KEY-...",
		Short: "Set or remove a node's labels (the node itself cannot)",
		Long: `Set (KEY=VALUE) or remove (KEY-) labels of a node. A node's labels, which place
workloads and so their secrets, come from its join token and from this command
only: its agent's own --labels never change them.`,
		Example: `  wasmorch node label edge-1 zone=b class=iot
  wasmorch node label edge-1 class-`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return cliclient.Errorf("e.g. 'wasmorch node label edge-1 zone=b' or 'wasmorch node label edge-1 zone-'", "node label takes a node name and at least one KEY=VALUE or KEY-")
			}
			set := map[string]string{}
			var remove []string
			for _, a := range args[1:] {
				if k, ok := strings.CutSuffix(a, "-"); ok && !strings.Contains(a, "=") {
					remove = append(remove, k)
					continue
				}
				k, v, ok := strings.Cut(a, "=")
				if !ok || k == "" {
					return cliclient.Errorf("use KEY=VALUE to set a label, KEY- to remove one", "invalid label %q", a)
				}
				set[k] = v
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			n, err := client.LabelNode(cmd.Context(), args[0], set, remove)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "node %s labeled: %s\n", args[0], dashIfEmpty(api.FormatLabels(n.Labels)))
			return nil
		},
	}
	server = addServerFlag(cmd)
	return cmd
}

func newDescribeCommand() *cobra.Command {
	var (
		server *string
		output string
	)
	cmd := &cobra.Command{
		Use:   "describe workload|node|nodegroup NAME",
		Short: "Show a workload's, node's or node group's details, instances (or nodes) and events",
		Example: `  wasmorch describe workload hello
  wasmorch describe node edge-1 -o json
  wasmorch describe nodegroup pool`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return cliclient.Errorf("e.g. 'wasmorch describe workload hello' or 'wasmorch describe node edge-1'", "describe takes a kind (workload, node or nodegroup) and a name")
			}
			format, err := cliout.ParseFormat(output)
			if err != nil {
				return &cliclient.Error{What: "invalid -o: " + err.Error(), Hint: "use -o table, json or yaml", Cause: err}
			}
			kind, name := getKinds[strings.ToLower(args[0])], args[1]
			if kind == cliclient.KindNodeGroups {
				return describeNodeGroup(cmd, *server, format, name) // cloud (nodegroups.go)
			}
			if kind != "workloads" && kind != "nodes" {
				return cliclient.Errorf("use workload, node or nodegroup", "cannot describe %q", args[0])
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			p := cliout.Printer{Format: format, Now: time.Now()}
			if kind == "workloads" {
				d, err := client.DescribeWorkload(cmd.Context(), name)
				if err != nil {
					return err
				}
				return p.DescribeWorkload(cmd.OutOrStdout(), d)
			}
			d, err := client.DescribeNode(cmd.Context(), name)
			if err != nil {
				return err
			}
			return p.DescribeNode(cmd.OutOrStdout(), d)
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	return cmd
}
