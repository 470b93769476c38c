package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/internal/cliclient"
)

// Registries (docs/registry.md): `wasmorch push FILE REF` and `wasmorch
// registry login|logout|list`; `deploy oci://REF` is deploy's.

func newPushCommand() *cobra.Command {
	var (
		cfg           cliclient.PushConfig
		passwordStdin bool
	)
	cmd := &cobra.Command{
		Use:   "push FILE.wasm REGISTRY/REPO:TAG",
		Short: "Push a Wasm module to an OCI registry and print its digest",
		Long: `Push a WebAssembly module to an OCI registry as an OCI Wasm artifact (a config
of media type application/vnd.wasm.config.v0+json and one layer of
application/wasm, the module) and print the manifest's digest. Deploy it with
'wasmorch deploy oci://REGISTRY/REPO:TAG' or by that digest.

push speaks to the registry only, not to a wasmorch server. It uses the
credentials docker's config.json holds for the registry ($DOCKER_CONFIG, or
~/.docker/config.json, as 'docker login' writes them), or --username with the
password on stdin. Every request is HTTPS (--ca-file adds a CA to trust) unless
--plain-http allows plain HTTP.`,
		Example: `  wasmorch push app.wasm registry.example.com/team/app:1.0
  echo -n "$TOKEN" | wasmorch push app.wasm 127.0.0.1:5000/app:1 --username ci --password-stdin --ca-file ca.pem`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return cliclient.Errorf("e.g. 'wasmorch push app.wasm registry.example.com/team/app:1.0'", "push takes a module file and a reference, got %d arguments", len(args))
			}
			cfg.File, cfg.Reference = args[0], args[1]
			if passwordStdin {
				pw, err := readPassword(cmd.InOrStdin())
				if err != nil {
					return err
				}
				cfg.Password = pw
			}
			digest, err := cliclient.Push(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), digest)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Username, "username", "", "registry user (default: docker's config.json credentials for the registry)")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the registry password (or token) from stdin")
	f.StringVar(&cfg.CAFile, "ca-file", "", "PEM file of a CA to trust for the registry, besides the system's")
	f.BoolVar(&cfg.PlainHTTP, "plain-http", false, "allow plain HTTP to the registry (default: HTTPS only)")
	f.DurationVar(&cfg.Timeout, "timeout", 2*time.Minute, "how long the push may take")
	commandLineOnly(f, "username", "password-stdin", "ca-file", "plain-http")
	return cmd
}

func newRegistryCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "registry",
		Short: "Manage how the cluster reaches OCI registries (login, logout, list)",
		Long: `The control plane pulls what 'deploy oci://REGISTRY/REPO:TAG' names from its
registry. 'registry login' stores what it needs for one registry — credentials,
a CA to trust, whether plain HTTP is allowed — in a secret named
registry-<host> (encrypted at rest like every secret); nodes never see it.`,
	}
	cmd.AddCommand(newRegistryLoginCommand(), newRegistryLogoutCommand(), newRegistryListCommand())
	return cmd
}

func newRegistryLoginCommand() *cobra.Command {
	var (
		server        *string
		cfg           cliclient.LoginConfig
		passwordStdin bool
	)
	cmd := &cobra.Command{
		Use:   "login REGISTRY[:PORT]",
		Short: "Store the credentials, CA and plain-HTTP permission the cluster uses for a registry",
		Long: `Store what the control plane needs to pull from a registry: --username with
the password (or token) on stdin, or with --docker-config the credentials
docker's config.json holds for it ($DOCKER_CONFIG or ~/.docker/config.json);
--ca-file, a CA to trust besides the system's; --plain-http, to allow plain
HTTP (refused otherwise, even to a loopback address). Logging in again
replaces all of them; a login with neither credentials nor --ca-file nor
--plain-http is refused.`,
		Example: `  echo -n "$TOKEN" | wasmorch registry login registry.example.com --username ci --password-stdin
  wasmorch registry login 127.0.0.1:5000 --docker-config --ca-file ca.pem
  wasmorch registry login registry.lan:5000 --plain-http`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cliclient.Errorf("e.g. 'wasmorch registry login registry.example.com --username ci --password-stdin'", "registry login takes one registry, got %d", len(args))
			}
			cfg.Host = args[0]
			if passwordStdin {
				pw, err := readPassword(cmd.InOrStdin())
				if err != nil {
					return err
				}
				cfg.Password = pw
			}
			if cfg.Username == "" && cfg.Password == "" && !cfg.FromDocker && cfg.CAFile == "" && !cfg.PlainHTTP {
				return cliclient.Errorf("pass --username and --password-stdin, --docker-config, --ca-file or --plain-http", "registry login %s has nothing to store", cfg.Host)
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			name, err := client.RegistryLogin(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "registry %s: settings stored in secret %s\n", cfg.Host, name)
			return nil
		},
	}
	server = addServerFlag(cmd)
	f := cmd.Flags()
	f.StringVar(&cfg.Username, "username", "", "registry user")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the registry password (or token) from stdin")
	f.BoolVar(&cfg.FromDocker, "docker-config", false, "take the credentials from docker's config.json ($DOCKER_CONFIG or ~/.docker/config.json)")
	f.StringVar(&cfg.CAFile, "ca-file", "", "PEM file of a CA to trust for the registry, besides the system's")
	f.BoolVar(&cfg.PlainHTTP, "plain-http", false, "allow plain HTTP to the registry (default: HTTPS only)")
	commandLineOnly(f, "username", "password-stdin", "docker-config", "ca-file", "plain-http")
	return cmd
}

func newRegistryLogoutCommand() *cobra.Command {
	var server *string
	cmd := &cobra.Command{
		Use:     "logout REGISTRY[:PORT]",
		Short:   "Remove the cluster's settings for a registry",
		Example: "  wasmorch registry logout registry.example.com",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cliclient.Errorf("e.g. 'wasmorch registry logout registry.example.com'", "registry logout takes one registry, got %d", len(args))
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			if err := client.RegistryLogout(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "registry %s: settings removed\n", args[0])
			return nil
		},
	}
	server = addServerFlag(cmd)
	return cmd
}

func newRegistryListCommand() *cobra.Command {
	var server *string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the registries the cluster has settings for",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			logins, err := client.RegistryLogins(cmd.Context())
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "SECRET\tKEYS")
			for _, s := range logins {
				fmt.Fprintf(tw, "%s\t%s\n", s.GetName(), strings.Join(s.GetKeys(), ","))
			}
			return tw.Flush()
		},
	}
	server = addServerFlag(cmd)
	return cmd
}

// readPassword reads a password from stdin, without its final newline.
func readPassword(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, 64<<10))
	if err != nil {
		return "", cliclient.Errorf("pipe the password in: echo -n \"$TOKEN\" | wasmorch ...", "cannot read the password from stdin: %v", err)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", cliclient.Errorf("pipe the password in: echo -n \"$TOKEN\" | wasmorch ...", "--password-stdin read an empty password")
	}
	return pw, nil
}
