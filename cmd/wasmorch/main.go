// Command wasmorch is the workload orchestrator's one binary: `up` runs a
// control plane and a worker together, `server` and `agent` run them
// apart, and the client commands (deploy, get, logs, scale, delete,
// version) drive a running cluster over its gRPC API.
//
// This package is only wiring: cobra parses flags, viper fills them from
// WASMORCH_* variables and the config file, and each command turns them
// into a typed config for a package (controlplane, worker, wasmrt,
// internal/cliclient) and prints what comes back. Every failure ends as
// one line on stderr, "error: <what was wrong>; <what to do>", and a
// non-zero exit status.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/internal/cliclient"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes one command line and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCommand(stop)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "error: "+cliclient.OneLine(explain(cmd, err).Error()))
	return 1
}

// explain gives every error a hint: errors from cliclient carry their own;
// the rest (unknown flags, wrong argument counts, invalid flag values)
// point at the failing command's help.
func explain(cmd *cobra.Command, err error) error {
	var ue *cliclient.Error
	if errors.As(err, &ue) {
		return err
	}
	path := "wasmorch"
	if cmd != nil {
		path = cmd.CommandPath()
	}
	// cobra appends suggestions on further lines ("Did you mean this?");
	// the first line is the error itself.
	what, _, _ := strings.Cut(err.Error(), "\n")
	return &cliclient.Error{What: what, Hint: fmt.Sprintf("see '%s --help'", path), Cause: err}
}
