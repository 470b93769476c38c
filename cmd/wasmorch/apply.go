package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/manifest"
)

// readManifest parses the manifest named by -f (- for stdin) and returns
// its objects and the directory relative module paths start from.
func readManifest(cmd *cobra.Command, file string) ([]manifest.Object, string, error) {
	if file == "" {
		return nil, "", cliclient.Errorf("e.g. 'wasmorch "+cmd.Name()+" -f app.yaml'", "%s needs -f FILE (or -f - for stdin)", cmd.Name())
	}
	var (
		r    io.Reader
		name = file
		dir  = "."
	)
	if file == "-" {
		r, name = cmd.InOrStdin(), "<stdin>"
	} else {
		f, err := os.Open(file)
		if err != nil {
			return nil, "", cliclient.Errorf("check the path", "cannot read manifest: %v", err)
		}
		defer f.Close()
		r, dir = f, filepath.Dir(file)
	}
	objs, err := manifest.Parse(name, r)
	if err != nil {
		return nil, "", cliclient.Errorf("see docs/manifests.md for the schema", "%v", err)
	}
	if len(objs) == 0 {
		return nil, "", cliclient.Errorf("see docs/manifests.md for the schema", "%s holds no objects", name)
	}
	return objs, dir, nil
}

func newApplyCommand() *cobra.Command {
	var (
		server *string
		file   string
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or update the workloads, configs and secrets of a manifest",
		Long: `Apply a manifest: multi-document YAML of Workload, Config and Secret objects
(see docs/manifests.md). Configs and secrets are applied before the workloads
that use them; every object is checked before any is written. apply prints
one line per object: created, configured or unchanged. Applying the same
manifest again changes nothing. apply does not wait for workloads to be ready
(see 'wasmorch get workloads').`,
		Example: `  wasmorch apply -f testdata/app.yaml
  cat app.yaml | wasmorch apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			objs, dir, err := readManifest(cmd, file)
			if err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			results, err := client.Apply(cmd.Context(), objs, dir, false)
			out := cmd.OutOrStdout()
			for _, r := range results {
				fmt.Fprintln(out, cliclient.SetSummary(strings.ToLower(r.Kind), r.Name, r.Outcome == "created", r.Outcome != "unchanged", r.Rolled))
			}
			return err
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().StringVarP(&file, "filename", "f", "", "the manifest (YAML, several documents separated by ---); - reads stdin")
	commandLineOnly(cmd.Flags(), "filename")
	return cmd
}

func newDiffCommand() *cobra.Command {
	var (
		server *string
		file   string
	)
	cmd := &cobra.Command{
		Use:   "diff -f FILE",
		Short: "Show what 'apply -f FILE' would change, without changing anything",
		Long: `Compare a manifest with the cluster: for each object, whether apply would
create it, configure it (with the fields or keys that differ; a secret's
values are never shown) or leave it unchanged. Exits 0 whether or not there
are differences.`,
		Example: "  wasmorch diff -f testdata/app.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			objs, dir, err := readManifest(cmd, file)
			if err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			results, err := client.Apply(cmd.Context(), objs, dir, true)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, r := range results {
				verb := "would be " + r.Outcome
				if r.Outcome == "unchanged" {
					verb = "unchanged"
				}
				fmt.Fprintf(out, "%s %s\n", r.ID(), verb)
				for _, c := range r.Changes {
					fmt.Fprintf(out, "  %s\n", c)
				}
			}
			return nil
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().StringVarP(&file, "filename", "f", "", "the manifest (YAML, several documents separated by ---); - reads stdin")
	commandLineOnly(cmd.Flags(), "filename")
	return cmd
}
