package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/controlplane"
	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/errdefs"
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
		server            *string
		role, description string
		ttl               time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create",
		Short: "Create a join token and print it",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if role != controlplane.TokenRoleAgent && role != controlplane.TokenRoleServer {
				return cliclient.Errorf("use --role agent or --role server", "invalid --role %q", role)
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			tok, _, err := client.CreateToken(cmd.Context(), role, ttl, description)
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
	commandLineOnly(cmd.Flags(), "role", "description")
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
			fmt.Fprintln(tw, "ID\tROLE\tEXPIRES\tDESCRIPTION")
			for _, t := range ts {
				exp := "in " + t.Expires.Sub(now).Round(time.Second).String()
				if !now.Before(t.Expires) {
					exp = "expired"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Role, exp, t.Description)
			}
			return tw.Flush()
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
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

// joinError gives a refused join (a token not valid, expired, revoked, or
// for another cluster) the hint of what to do about it.
func joinError(err error) error {
	if err == nil || !(errors.Is(err, errdefs.ErrUnauthenticated) || errors.Is(err, errdefs.ErrPermissionDenied) || errors.Is(err, auth.ErrPinMismatch)) {
		return err
	}
	what := strings.TrimPrefix(cliclient.OneLine(err.Error()), "the worker failed: ")
	what, _, _ = strings.Cut(what, "; see the log above")
	return &cliclient.Error{What: "the agent cannot join the cluster: " + what, Hint: "pass a valid --token (made on a server with 'wasmorch token create'), and check --server", Cause: err}
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

// printCredentials says where the admin credential is and, on the first
// start of a cluster, prints a join token for agents.
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
	tok, _, err := srv.CreateJoinToken(ctx, controlplane.TokenRoleAgent, controlplane.DefaultTokenTTL, "printed at the first start")
	if err != nil {
		d.logger.Warn("could not create a join token; create one with 'wasmorch token create'", "err", err)
		return
	}
	fmt.Fprintf(d.out, "join a worker (token valid %s; more with 'wasmorch token create'):\n  wasmorch agent --server %s --token %s\n", strings.TrimSuffix(controlplane.DefaultTokenTTL.String(), "0m0s"), server, tok)
}
