package clirun

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

	"github.com/wasmorch/wasmorch/internal/clierr"
)

// ConfigFlagHelp describes the root's --config flag.
const ConfigFlagHelp = "config file (YAML; default $XDG_CONFIG_HOME/wasmorch/config.yaml or ~/.config/wasmorch/config.yaml if it exists; also WASMORCH_CONFIG)"

// Run executes one command line against the command tree newRoot builds
// and returns the exit status. newRoot's stopSignals restores the default
// signal handling, so that a second Ctrl-C during a slow shutdown kills
// the process. A failure is one line on stderr, "error: <what was wrong>;
// <what to do>".
func Run(newRoot func(stopSignals func()) *cobra.Command, args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot(stop)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "error: "+clierr.OneLine(explain(root, cmd, err).Error()))
	return 1
}

// explain gives every error a hint: errors from cliclient carry their own;
// the rest (unknown flags, wrong argument counts, invalid flag values)
// point at the failing command's help.
func explain(root, cmd *cobra.Command, err error) error {
	var ue *clierr.Error
	if errors.As(err, &ue) {
		return err
	}
	path := root.Name()
	if cmd != nil {
		path = cmd.CommandPath()
	}
	// cobra appends suggestions on further lines ("Did you mean this?");
	// the first line is the error itself.
	what, _, _ := strings.Cut(err.Error(), "\n")
	return &clierr.Error{What: what, Hint: fmt.Sprintf("see '%s --help'", path), Cause: err}
}
