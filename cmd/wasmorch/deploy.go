package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/cliout"
)

func newDeployCommand() *cobra.Command {
	var (
		cfg    cliclient.DeployConfig
		server *string
	)
	cmd := &cobra.Command{
		Use:   "deploy FILE.wasm [flags] [-- ARG...]",
		Short: "Upload a module and deploy or update a workload, then wait until it is ready",
		Long: `Upload a WebAssembly module (a WASI command that exports _start) and deploy it
as a workload, or update the workload if it exists. Arguments after -- become the
module's argv[1:].

deploy then waits until every replica is ready (running, or exited 0), and for
--restart never until every replica has started. It fails at once, naming the
instance, its exit code and reason, if an instance fails.`,
		Example: `  wasmorch deploy testdata/hello.wasm --replicas 3
  wasmorch deploy app.wasm --name api --env MODE=prod --memory 64Mi -- --port 8000`,
		RunE: func(cmd *cobra.Command, args []string) error {
			files, moduleArgs := args, []string(nil)
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				files, moduleArgs = args[:dash], args[dash:]
			}
			if len(files) != 1 {
				return cliclient.Errorf("e.g. 'wasmorch deploy testdata/hello.wasm --name hello'", "deploy takes one module file, got %d", len(files))
			}
			cfg.File, cfg.Args = files[0], moduleArgs
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			progress := cliout.NewStderrProgress()
			res, err := client.Deploy(cmd.Context(), cfg, progress.Update)
			progress.Done()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch {
			case !res.Waited:
				fmt.Fprintf(out, "deployed %s (generation %d); not waiting, see 'wasmorch get instances --workload %s'\n", res.Name, res.Generation, res.Name)
			case res.StartOnly:
				fmt.Fprintf(out, "deployed %s (generation %d): %d/%d started\n", res.Name, res.Generation, res.Ready, res.Replicas)
			default:
				fmt.Fprintf(out, "deployed %s (generation %d): %d/%d ready\n", res.Name, res.Generation, res.Ready, res.Replicas)
			}
			return nil
		},
	}
	f := cmd.Flags()
	server = addServerFlag(cmd)
	f.StringVar(&cfg.Name, "name", "", "workload name, a DNS label (default: the file's base name without .wasm)")
	f.IntVar(&cfg.Replicas, "replicas", 1, "number of instances")
	f.StringArrayVar(&cfg.Env, "env", nil, "environment variable NAME=VALUE for the module (repeatable)")
	f.StringVar(&cfg.Memory, "memory", "", "memory limit per instance, e.g. 64Mi, 128MiB, 1Gi or bytes (default: the runtime's, 128Mi)")
	f.StringVar(&cfg.Restart, "restart", "always", "restart policy: "+strings.Join(cliclient.RestartNames(), ", "))
	f.DurationVar(&cfg.Timeout, "timeout", cliclient.DefaultDeployTimeout, "how long to wait for the workload to be ready")
	f.BoolVar(&cfg.NoWait, "no-wait", false, "return once the workload is applied, without waiting")
	commandLineOnly(f, "name", "env")
	return cmd
}
