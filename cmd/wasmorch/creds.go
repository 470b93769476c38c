package main

import (
	"encoding/json"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/cliclient"
)

// credentialsFlag names the credential file a client command presents.
const credentialsFlag = "credentials"

// findCredential finds the client's credential: --credentials (or
// WASMORCH_CREDENTIALS, or the config file's key), else the config file
// itself when it is a credential (an admin.yaml given as --config), else
// the file the server on this machine wrote for the --server address in
// the user's credentials directory.
func findCredential(cmd *cobra.Command, server string) (*cliclient.Credential, []string, error) {
	s := cliclient.CredentialSearch{}
	if f := cmd.Flags().Lookup(credentialsFlag); f != nil {
		s.Explicit = f.Value.String()
	}
	s.ConfigFile, _ = configPath(cmd)
	if dir, err := auth.UserCredentialsDir(); err == nil {
		s.Dir = dir
	}
	return cliclient.FindCredential(s, server)
}

// newCredentialsCommand is `wasmorch credentials create|list|revoke`:
// admin credentials; and `credentials export` (credentials.go), which
// writes the CLI's as PEM files for other gRPC clients.
func newCredentialsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "credentials",
		Short: "Manage admin credentials (create, list, revoke, export)",
		Long: `Admin credentials are certificates of the cluster CA with the admin role, each in
a YAML file with its key (like a kubeconfig). Every member writes one for its own
machine (<data-dir>/admin.yaml); 'credentials create' issues more, one per person
or tool, and 'credentials revoke' puts one's serial on the cluster's revocation
list, which every member checks on every call. 'credentials export' writes the
credential the CLI uses as PEM files that any gRPC client (grpcurl) takes.`,
	}
	cmd.AddCommand(newCredentialsCreateCommand(), newCredentialsListCommand(), newCredentialsRevokeCommand(), newCredentialsExportCommand())
	return cmd
}

func newCredentialsCreateCommand() *cobra.Command {
	var (
		server    *string
		name, out string
		ttl       time.Duration
	)
	cmd := &cobra.Command{
		Use:   "create --name NAME --out FILE",
		Short: "Issue an admin credential into a new file (0600)",
		Long: `Issue a new admin credential named --name into --out (mode 0600): the key is made
here and never leaves this machine; the cluster signs its certificate. Hand the
file to whoever it is for ('--credentials FILE'); revoke it with
'wasmorch credentials revoke SERIAL' when they no longer need it.`,
		Example: "  wasmorch credentials create --name alice --out alice.yaml --ttl 720h",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return cliclient.Errorf("e.g. --out alice.yaml", "credentials create needs --out, the file to write")
			}
			if _, err := os.Stat(out); err == nil {
				return cliclient.Errorf("choose another --out, or remove the file first", "%s exists already", out)
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			c, info, err := client.IssueCredential(cmd.Context(), name, ttl)
			if err != nil {
				return err
			}
			c.Server = client.Addr()
			if err := auth.WriteCredential(out, c); err != nil {
				return cliclient.Errorf("choose a writable --out", "cannot write the credential: %v", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote admin credential %s (serial %s, expires %s) to %s\n", info.Name, info.Serial, info.Expires.UTC().Format(time.RFC3339), out)
			return nil
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().StringVar(&name, "name", "admin", "who holds the credential (shown by 'credentials list')")
	cmd.Flags().StringVar(&out, "out", "", "file to write the credential to (must not exist)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "how long the credential is valid (default the CA's: a year)")
	commandLineOnly(cmd.Flags(), "name", "out")
	return cmd
}

func newCredentialsListCommand() *cobra.Command {
	var (
		server *string
		output string
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the admin credentials not yet expired, revoked ones included",
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
			cs, err := client.ListCredentials(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(cs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 8, 3, ' ', 0)
			fmt.Fprintln(tw, "SERIAL\tNAME\tISSUED\tEXPIRES\tREVOKED")
			for _, c := range cs {
				revoked := "-"
				if !c.Revoked.IsZero() {
					revoked = c.Revoked.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Serial, dashIfEmpty(c.Name), c.Issued.UTC().Format(time.RFC3339), c.Expires.UTC().Format(time.RFC3339), revoked)
			}
			return tw.Flush()
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func newCredentialsRevokeCommand() *cobra.Command {
	var (
		server           *string
		reason, fromFile string
	)
	cmd := &cobra.Command{
		Use:   "revoke SERIAL | --file CREDENTIAL",
		Short: "Revoke an admin credential: every member refuses it from now on",
		Long: `Put an admin credential's serial (from 'credentials list', or read from the
credential file given with --file) on the cluster's revocation list: every member
refuses it on every call from then on, and ends the streams open with it. A
member whose own admin.yaml is revoked writes a new one at once. Nodes are not
revoked here: 'wasmorch node rm NODE' revokes every certificate of a node.`,
		Example: `  wasmorch credentials revoke 98231770243562190431175208139312771742
  wasmorch credentials revoke --file stolen-admin.yaml --reason "laptop lost"`,
		RunE: func(cmd *cobra.Command, args []string) error {
			var serial string
			switch {
			case fromFile != "" && len(args) == 0:
				c, err := auth.ReadCredential(fromFile)
				if err != nil {
					return cliclient.Errorf("give a credential file, as 'credentials create' or a server writes them", "cannot read %s: %v", fromFile, err)
				}
				cert, err := auth.ParseCertificate([]byte(c.Cert))
				if err != nil {
					return cliclient.Errorf("give a credential file, as 'credentials create' or a server writes them", "%s: %v", fromFile, err)
				}
				serial = auth.Serial(cert)
			case fromFile == "" && len(args) == 1:
				serial = args[0]
			default:
				return cliclient.Errorf("e.g. 'wasmorch credentials revoke SERIAL' or 'wasmorch credentials revoke --file alice.yaml'", "credentials revoke takes one serial, or --file")
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			info, err := client.RevokeCredential(cmd.Context(), serial, reason)
			if err != nil {
				return err
			}
			who := ""
			if info.Name != "" {
				who = " (" + info.Name + ")"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked credential %s%s: refused by every member from now on\n", serial, who)
			return nil
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().StringVar(&reason, "reason", "", "why, shown to whoever presents it")
	cmd.Flags().StringVar(&fromFile, "file", "", "read the serial from this credential file")
	commandLineOnly(cmd.Flags(), "reason", "file")
	return cmd
}
