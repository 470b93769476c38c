package main

import (
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
