package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/controlplane"
	"github.com/wasmorch/wasmorch/controlplane/api"
	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/cliclient"
)

// newTokenCommand is `wasmorch token create|list|revoke`: join tokens.
func newTokenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Manage join tokens (create, list, revoke)",
		Long: `Join tokens let an agent (or, with --role server, a control-plane member) join
the cluster: it presents the token once and receives its own certificate.
A token expires; only its hash is stored.`,
	}
	cmd.AddCommand(newTokenCreateCommand(), newTokenListCommand(), newTokenRevokeCommand())
	return cmd
}

func newTokenCreateCommand() *cobra.Command {
	var (
		server                  *string
		role, description, node string
		labels                  []string
		uses                    int32
		ttl                     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a join token and print it",
		Long: `Create a join token and print it (its secret is shown only now). A node that
joins with it gets the labels of --labels, which are the only labels that place
workloads on it besides an admin's 'wasmorch node label': an agent's own --labels
are accepted at its join only where the token has the same key=value, or the
key with the value * (the agent chooses it). --node admits that one name only,
and may take it over from a node that joined before (its certificates are
revoked); --uses limits the number of joins.`,
		Example: `  wasmorch token create --node edge-7 --labels zone=a,class=iot --uses 1 --ttl 1h
  wasmorch token create --labels 'zone=*'       # agents choose their zone at their join`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if role != controlplane.TokenRoleAgent && role != controlplane.TokenRoleServer {
				return cliclient.Errorf("use --role agent or --role server", "invalid --role %q", role)
			}
			lbls, err := parseLabels(labels)
			if err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			tok, _, err := client.CreateToken(cmd.Context(), cliclient.TokenSpec{Role: role, TTL: ttl, Description: description, Node: node, Labels: lbls, Uses: uses})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().StringVar(&role, "role", controlplane.TokenRoleAgent, "what the token admits: agent, or server (a control-plane member joining with --join; it also admits agents)")
	cmd.Flags().DurationVar(&ttl, "ttl", controlplane.DefaultTokenTTL, "how long the token is valid")
	cmd.Flags().StringVar(&description, "description", "", "a note shown by 'token list'")
	cmd.Flags().StringVar(&node, "node", "", "admit this node name only (and let it take the name over from a node that joined before)")
	cmd.Flags().StringSliceVar(&labels, "labels", nil, "labels k=v[,k=v...] a node joining with the token gets; k=* lets the agent choose k's value")
	cmd.Flags().Int32Var(&uses, "uses", 0, "how many joins the token admits (0: any number until it expires)")
	commandLineOnly(cmd.Flags(), "role", "description", "node", "labels", "uses")
	return cmd
}

func newTokenListCommand() *cobra.Command {
	var server *string
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List join tokens (never their secrets)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return cliclient.Errorf("use -o table or json", "invalid -o %q", output)
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			ts, err := client.ListTokens(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(ts)
			}
			now := time.Now()
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "ID\tROLE\tNODE\tLABELS\tUSES\tEXPIRES\tDESCRIPTION")
			for _, t := range ts {
				exp := "in " + t.Expires.Sub(now).Round(time.Second).String()
				if !now.Before(t.Expires) {
					exp = "expired"
				}
				uses := fmt.Sprintf("%d", t.Used)
				if t.Uses > 0 {
					uses = fmt.Sprintf("%d/%d", t.Used, t.Uses)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Role, dashIfEmpty(t.Node), dashIfEmpty(api.FormatLabels(t.Labels)), uses, exp, t.Description)
			}
			return tw.Flush()
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newTokenRevokeCommand() *cobra.Command {
	var server *string
	cmd := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a join token: it admits no one from now on",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			if err := client.RevokeToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s\n", args[0])
			return nil
		},
	}
	server = addServerFlag(cmd)
	return cmd
}

// userCredentialsDir is where `up` and `server` leave the admin
// credential for the CLI of the same user ("" if there is no home).
func userCredentialsDir() string {
	dir, err := auth.UserCredentialsDir()
	if err != nil {
		return ""
	}
	return dir
}

// addCertLifetimeFlag adds the hidden --cert-lifetime, with which tests
// see certificates rotate.
func addCertLifetimeFlag(cmd *cobra.Command, cp *controlplane.Config) {
	cmd.Flags().DurationVar(&cp.CertLifetime, "cert-lifetime", 0, "lifetime of the certificates this member issues (default a year; renewed at two thirds)")
	_ = cmd.Flags().MarkHidden("cert-lifetime")
}

// joinTokenFile is where a server's first start leaves the agents' join
// token when its output is not a terminal (a log file, a journal).
const joinTokenFile = "join-token"

// printCredentials says where the admin credential is and, on the first
// start of a cluster, makes a join token for agents: printed when the
// output is a terminal, else written to <data-dir>/join-token (0600) and
// only its path printed, so that the token never lands in a log.
func printCredentials(ctx context.Context, d daemonIO, srv *controlplane.Server, cp controlplane.Config, server string) {
	fmt.Fprintf(d.out, "  admin credential: %s", absPath(controlplane.AdminCredentialPath(cp.DataDir)))
	if cp.UserCredentialsDir != "" {
		fmt.Fprintf(d.out, " (the CLI of this user finds it: %s)", filepath.Join(cp.UserCredentialsDir, auth.CredentialFileName(server)))
	}
	fmt.Fprintln(d.out)
	if !srv.CreatedCluster() {
		fmt.Fprintf(d.out, "join a worker: wasmorch agent --server %s --token $(wasmorch token create --server %s)\n", server, server)
		return
	}
	tok, _, err := srv.CreateJoinToken(ctx, controlplane.TokenSpec{Role: controlplane.TokenRoleAgent, TTL: controlplane.DefaultTokenTTL, Description: "made at the first start"})
	if err != nil {
		d.logger.Warn("could not create a join token; create one with 'wasmorch token create'", "err", err)
		return
	}
	valid := strings.TrimSuffix(controlplane.DefaultTokenTTL.String(), "0m0s")
	if d.terminal {
		fmt.Fprintf(d.out, "join a worker (token valid %s; more with 'wasmorch token create'):\n  wasmorch agent --server %s --token %s\n", valid, server, tok)
		return
	}
	path := filepath.Join(cp.DataDir, joinTokenFile)
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		d.logger.Warn("could not write the join token; create one with 'wasmorch token create'", "path", path, "err", err)
		return
	}
	fmt.Fprintf(d.out, "join a worker (token valid %s, in a file only its owner reads; more with 'wasmorch token create'):\n  wasmorch agent --server %s --token $(cat %s)\n", valid, server, absPath(path))
}
