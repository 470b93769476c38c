package main

import (
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/controlplane"
	"github.com/wasmorch/wasmorch/internal/cliclient"
)

// newUICommand is `wasmorch ui token`: the web dashboard's login.
func newUICommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Log in to the web dashboard (ui token)",
		Long: `Every control-plane member serves a web dashboard at /ui on its
--metrics-addr listener (default 127.0.0.1:7072): nodes, workloads,
instances, events and logs, kept live, and scale, rollout and delete
actions. It asks for a dashboard token, which 'wasmorch ui token' mints.`,
	}
	cmd.AddCommand(newUITokenCommand())
	return cmd
}

func newUITokenCommand() *cobra.Command {
	var (
		server *string
		ttl    time.Duration
		addr   string
	)
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Mint a dashboard token and print the URL that logs in with it",
		Long: `Mint a dashboard token and print the URL that logs in with it. The token acts
as the admin whose credential minted it, on every member, until it expires
(--ttl, at most 24h); revoking that credential ('wasmorch credentials
revoke') ends its tokens too. The token travels in the URL's fragment, which the browser does not send to
the server: the login page posts it once, and keeps it in a cookie.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if addr == "" {
				host, _, err := net.SplitHostPort(*server)
				if err != nil {
					return cliclient.Errorf("set --addr to the member's --metrics-addr, HOST:PORT", "--server %q is not HOST:PORT", *server)
				}
				_, port, _ := net.SplitHostPort(controlplane.DefaultMetricsAddr)
				addr = net.JoinHostPort(host, port)
			} else if _, _, err := net.SplitHostPort(addr); err != nil {
				return cliclient.Errorf("e.g. --addr 127.0.0.1:7072, the member's --metrics-addr", "--addr %q is not HOST:PORT", addr)
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			tok, expires, err := client.CreateUIToken(cmd.Context(), ttl)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "http://%s/ui/#token=%s\n", addr, tok)
			fmt.Fprintf(cmd.ErrOrStderr(), "open this URL in a browser: it logs in to the dashboard until %s\n", expires.Local().Format(time.RFC1123))
			return nil
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().DurationVar(&ttl, "ttl", 12*time.Hour, "how long the token is valid (at most 24h)")
	cmd.Flags().StringVar(&addr, "addr", "", "the dashboard's address, the member's --metrics-addr (default: --server's host, port 7072)")
	return cmd
}

// dashboardLine is the line of `up` and `server` that says where the
// dashboard is, "" when the member serves none (no --metrics-addr).
func dashboardLine(srv *controlplane.Server) string {
	if srv.MetricsAddr() == "" {
		return ""
	}
	return fmt.Sprintf("  dashboard: http://%s/ui/ (log in with 'wasmorch ui token')\n", dialable(srv.MetricsAddr()))
}
