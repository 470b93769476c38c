package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/cliclient"
)

// newCredentialsExportCommand is `wasmorch credentials export` (observe),
// beside create, list and revoke (creds.go).
func newCredentialsExportCommand() *cobra.Command {
	var (
		server *string
		dir    string
	)
	cmd := &cobra.Command{
		Use:   "export --dir DIR",
		Short: "Write the credential the CLI uses as ca.pem, cert.pem and key.pem",
		Long: `Write the credential the CLI would present to --server (found as every client
command finds it) as three PEM files that any gRPC client takes: ca.pem (the
cluster CA, to trust the server), cert.pem and key.pem (who the client is; key.pem
is written with mode 0600). Whoever holds them controls the cluster.`,
		Example: `  wasmorch credentials export --dir ./pem
  grpcurl -cacert pem/ca.pem -cert pem/cert.pem -key pem/key.pem 127.0.0.1:7070 list`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return cliclient.Errorf("e.g. 'wasmorch credentials export --dir ./pem'", "credentials export needs --dir DIR")
			}
			cred, _, err := findCredential(cmd, *server)
			if err != nil {
				return err
			}
			c, err := auth.ReadCredential(cred.Path)
			if err != nil {
				return cliclient.Errorf("check the credential file", "cannot read the credential %s: %v", cred.Path, err)
			}
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return cliclient.Errorf("choose another --dir", "cannot create %s: %v", dir, err)
			}
			for _, f := range []struct {
				name, pem string
				mode      os.FileMode
			}{{"ca.pem", c.CA, 0o644}, {"cert.pem", c.Cert, 0o644}, {"key.pem", c.Key, 0o600}} {
				path := filepath.Join(dir, f.name)
				if err := os.WriteFile(path, []byte(f.pem), f.mode); err != nil {
					return cliclient.Errorf("choose another --dir", "cannot write %s: %v", path, err)
				}
				if err := os.Chmod(path, f.mode); err != nil {
					return cliclient.Errorf("choose another --dir", "cannot set the mode of %s: %v", path, err)
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s, %s and %s (from %s)\n", filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), cred.Path)
			return nil
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().StringVar(&dir, "dir", "", "directory to write ca.pem, cert.pem and key.pem into (created if missing)")
	commandLineOnly(cmd.Flags(), "dir")
	return cmd
}
