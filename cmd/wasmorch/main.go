// Command wasmorch is the workload orchestrator's one binary: `up` runs a
// control plane and a worker together, `server` and `agent` run them
// apart, and the client commands (deploy, get, logs, scale, delete,
// version) drive a running cluster over its gRPC API.
//
// This package is only wiring: cobra parses flags, viper fills them from
// WASMORCH_* variables and the config file (internal/clirun), and each
// command turns them into a typed config for a package (controlplane,
// worker, wasmrt, internal/cliclient) and prints what comes back. The
// agent command is internal/agentcmd's, which cmd/wasmorch-agent runs
// alone. Every failure ends as one line on stderr, "error: <what was
// wrong>; <what to do>", and a non-zero exit status.
package main

import (
	"io"
	"os"

	"github.com/wasmorch/wasmorch/internal/clirun"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	return clirun.Run(newRootCommand, args, stdout, stderr)
}
