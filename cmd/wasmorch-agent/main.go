// Command wasmorch-agent is the slim agent: `wasmorch agent` alone, for
// small machines (a Raspberry Pi class board, an IoT gateway). It takes
// the same flags, WASMORCH_* variables and config file, and joins the same
// way (internal/agentcmd is both), but links neither the control plane and
// its embedded etcd, nor the client commands, nor containerd's client: it
// runs WebAssembly only. docs/edge.md.
package main

import (
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/internal/agentcmd"
	"github.com/wasmorch/wasmorch/internal/clirun"
	"github.com/wasmorch/wasmorch/internal/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	return clirun.Run(newRootCommand, args, stdout, stderr)
}

func newRootCommand(stopSignals func()) *cobra.Command {
	root := agentcmd.NewCommand("wasmorch-agent", stopSignals, nil)
	root.Version = version.Version
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		return clirun.ApplySettings(cmd)
	}
	root.PersistentFlags().String(clirun.ConfigFlag, "", clirun.ConfigFlagHelp)
	return root
}
