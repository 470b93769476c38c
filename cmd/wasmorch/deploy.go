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
		Use:   "deploy FILE.wasm|IMAGE-oci.tar|oci://REGISTRY/REPO:TAG [flags] [-- ARG...]",
		Short: "Upload a module and deploy or update a workload, then wait until it is ready",
		Long: `Upload a WebAssembly module (a WASI command that exports _start) and deploy it
as a workload, or update the workload if it exists. Arguments after -- become the
module's argv[1:].

An OCI image archive (docker save, skopeo copy ... oci-archive:FILE) is uploaded
the same way and runs as a container on nodes that offer the container runtime;
so does an image reference given with --image, which each node pulls. Arguments
after -- then replace the image's CMD. With --route, a container is an HTTP
function: it listens on $PORT (--port, default 8080) and the gateway proxies the
route's requests to it.

A module with --port is a Wasm service: a long-running instance that accepts
connections on a TCP listener its node opens and preopens for it (fd 3, or
$LISTEN_FD), with --route behind the gateway as an HTTP container is, with --tcp
on its node's own port.

oci://REGISTRY/REPO:TAG (or oci://REGISTRY/REPO@sha256:...) names a module or an
image in an OCI registry: the control plane pulls it, stores it like an upload
and records the digest the reference resolved to, so a tag moved later changes
nothing until the next deploy (see 'wasmorch push' and 'wasmorch registry').

--fallback-image gives a module an image (a reference or an OCI image archive)
that runs as a container where the module cannot run as Wasm: on nodes without
the wasm runtime, and everywhere if the module imports what the wasm runtime
does not provide or is a component (WASI preview 2).

deploy then waits until every replica is ready (running, or exited 0), and for
--restart never until every replica has started. It fails at once, naming the
instance, its exit code and reason, if an instance fails.

With --canary, a new revision of a function first gets that share of its traffic
on its own replicas while the old ones serve the rest; deploy returns once the
canary is ready, and 'wasmorch rollout promote' (or --canary-duration) lets the
rollout go on.`,
		Example: `  wasmorch deploy testdata/hello.wasm --replicas 3 --restart on-failure
  wasmorch deploy app.wasm --name api --env MODE=prod --memory 64Mi -- --port 8000
  wasmorch deploy ./api-oci.tar --name api2
  wasmorch deploy oci://registry.example.com/team/app:1.0 --name app
  wasmorch deploy --image registry.example.com/team/api:1.4 --name api --memory 256Mi
  wasmorch deploy --image team/api:1.4 --name api --port 8080 --route /api
  wasmorch deploy server.wasm --name api --port 8080 --route /api --replicas 2
  wasmorch deploy echo.wasm --name echo --port 7000 --tcp
  wasmorch deploy app.wasm --fallback-image team/app:1.0
  wasmorch deploy greet.wasm --name greet --route /greet --replicas 4 --canary 25%`,
		RunE: func(cmd *cobra.Command, args []string) error {
			files, moduleArgs := args, []string(nil)
			if dash := cmd.ArgsLenAtDash(); dash >= 0 {
				files, moduleArgs = args[:dash], args[dash:]
			}
			switch {
			case cfg.Image != "" && len(files) == 0:
				cfg.Args = moduleArgs
			case cfg.Image != "":
				return cliclient.Errorf("drop the file to run the image, or drop --image", "deploy takes a file or --image %s, not both", cfg.Image)
			case len(files) != 1:
				return cliclient.Errorf("e.g. 'wasmorch deploy testdata/hello.wasm --name hello'", "deploy takes one module file, got %d", len(files))
			default:
				cfg.File, cfg.Args = files[0], moduleArgs
			}
			cfg.ChangeCause = "deploy " + cfg.File + cfg.Image // rollouts
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			progress := cliout.NewStderrProgress()
			res, err := client.Deploy(cmd.Context(), cfg, progress.Show)
			progress.Done()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			switch {
			case !res.Waited:
				fmt.Fprintf(out, "deployed %s (generation %d); not waiting, see 'wasmorch get instances --workload %s'\n", res.Name, res.Generation, res.Name)
			case res.Canary != nil:
				fmt.Fprintf(out, "deployed %s (generation %d)\n%s\n", res.Name, res.Generation, res.Canary.Summary(res.Name))
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
	f.StringVar(&cfg.Scratch, "scratch", "", "a writable /tmp of this size for each instance, e.g. 64Mi (a container: a tmpfs), removed with the instance; writes past it fail with ENOSPC (default: no /tmp)")
	f.StringArrayVar(&cfg.Volumes, "volume", nil, "a named volume NAME:/PATH every instance mounts, writable, kept on its node across restarts, redeploys and rollouts; NAME:/PATH,per-instance gives each replica its own, NAME-WORKLOAD-N (repeatable; see 'wasmorch volume')")
	f.StringArrayVar(&cfg.Mounts, "mount", nil, "a host directory HOST-DIR:/PATH[:ro] every instance mounts, writable unless :ro; only under what the node allows (up|agent --allow-mount) (repeatable)")
	f.StringVar(&cfg.Restart, "restart", "always", "restart policy: "+strings.Join(cliclient.RestartNames(), ", "))
	f.DurationVar(&cfg.Timeout, "timeout", cliclient.DefaultDeployTimeout, "how long to wait for the workload to be ready")
	f.BoolVar(&cfg.NoWait, "no-wait", false, "return once the workload is applied, without waiting")
	f.StringVar(&cfg.Image, "image", "", "run this image reference as a container (each node pulls it) instead of a file")
	f.StringVar(&cfg.FallbackImage, "fallback-image", "", "a module's fallback, an image reference or an OCI image archive: runs as a container where the module cannot run as Wasm")
	f.IntVar(&cfg.Port, "port", 0, "with --route: the port an HTTP container listens on ($PORT, default 8080), or for a module the port of a Wasm service, which accepts connections on the listener the node preopens (fd 3, $LISTEN_FD); see docs/services.md")
	f.BoolVar(&cfg.TCP, "tcp", false, "with --port and no --route: a plain TCP Wasm service, listening on its node's own port (one instance per node and port)")
	f.StringSliceVar(&cfg.Selector, "selector", nil, "node labels k=v[,k=v...] a node must carry to run the instances")
	f.StringVar(&cfg.Spread, "spread", "", "node label to spread the replicas across, e.g. zone")
	f.StringSliceVar(&cfg.Labels, "labels", nil, "the workload's labels k=v[,k=v...], which 'get -l' selects by (they replace those it has)")
	f.StringSliceVar(&cfg.Arch, "arch", nil, "CPU architectures a node must have, any of (GOARCH names: amd64,arm64)")
	f.StringSliceVar(&cfg.OS, "os", nil, "operating systems a node must run, any of (GOOS names: linux)")
	f.StringVar(&cfg.CPU, "cpu", "", "CPU each instance reserves on its node: millicores (250m) or cores (0.5)")
	addFunctionFlags(f, &cfg.Function)
	// --config names the CLI's own config file, hence --from-config.
	f.StringArrayVar(&cfg.Configs, "from-config", nil, "a config whose keys become environment variables of every instance (repeatable; see 'wasmorch config')")
	f.StringArrayVar(&cfg.Secrets, "from-secret", nil, "a secret whose keys become environment variables of every instance (repeatable; see 'wasmorch secret')")
	f.StringArrayVar(&cfg.ConfigFiles, "config-files", nil, "a config whose keys become read-only files /config/NAME/KEY of every instance, Wasm or container (repeatable)")
	f.StringArrayVar(&cfg.SecretFiles, "secret-files", nil, "a secret whose keys become read-only files /secrets/NAME/KEY of every instance, Wasm or container (repeatable)")
	// rollouts
	f.StringVar(&cfg.MaxSurge, "max-surge", "", "how many instances a rolling update may add above --replicas: a count or a percentage (default 25%, rounded up)")
	f.StringVar(&cfg.MaxUnavailable, "max-unavailable", "", "how many of --replicas a rolling update may leave not ready: a count or a percentage (default 25%, rounded down)")
	f.StringVar(&cfg.Canary, "canary", "", "with --route: the share of the traffic a new revision gets before it is promoted, 1% to 99% (its replicas: that share of --replicas, rounded up); see 'wasmorch rollout promote'")
	f.DurationVar(&cfg.CanaryDuration, "canary-duration", 0, "with --canary: promote the canary once its replicas have all been ready this long (default: wait for 'wasmorch rollout promote')")
	commandLineOnly(f, "max-surge", "max-unavailable", "canary", "canary-duration")
	commandLineOnly(f, "name", "env", "volume", "mount", "labels", "from-config", "from-secret", "config-files", "secret-files")
	return cmd
}
