package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/manifest"
)

// readManifests parses the manifests named by -f: files, directories
// (their *.yaml and *.yml files, in name order) or - for stdin. Each
// object keeps where its relative module paths start. An object defined
// twice, in one file or across them, is an error.
func readManifests(cmd *cobra.Command, files []string) ([]manifest.Object, error) {
	if len(files) == 0 {
		return nil, cliclient.Errorf("e.g. 'wasmorch "+cmd.Name()+" -f app.yaml'", "%s needs -f FILE (a file, a directory, or - for stdin)", cmd.Name())
	}
	var paths []string
	for _, f := range files {
		if f == "-" {
			paths = append(paths, f)
			continue
		}
		fi, err := os.Stat(f)
		if err != nil {
			return nil, cliclient.Errorf("check the path", "cannot read manifest: %v", err)
		}
		if !fi.IsDir() {
			paths = append(paths, f)
			continue
		}
		var inDir []string
		for _, pattern := range []string{"*.yaml", "*.yml"} {
			m, err := filepath.Glob(filepath.Join(f, pattern))
			if err != nil {
				return nil, cliclient.Errorf("check the path", "cannot read directory %s: %v", f, err)
			}
			inDir = append(inDir, m...)
		}
		if len(inDir) == 0 {
			return nil, cliclient.Errorf("put manifests (*.yaml, *.yml) in it, or name the files", "directory %s holds no *.yaml or *.yml files", f)
		}
		sort.Strings(inDir)
		paths = append(paths, inDir...)
	}
	var all []manifest.Object
	seen := map[string]manifest.Object{}
	for _, p := range paths {
		objs, err := readManifest(cmd, p)
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			id := strings.ToLower(o.Kind) + "/" + o.Metadata.Name
			if first, dup := seen[id]; dup {
				return nil, cliclient.Errorf("keep one of them", "%s is defined twice: %s:%d and %s:%d", id, first.File, first.Line, o.File, o.Line)
			}
			seen[id] = o
		}
		all = append(all, objs...)
	}
	return all, nil
}

// readManifest parses one manifest (- for stdin).
func readManifest(cmd *cobra.Command, file string) ([]manifest.Object, error) {
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
			return nil, cliclient.Errorf("check the path", "cannot read manifest: %v", err)
		}
		defer f.Close()
		r, dir = f, filepath.Dir(file)
	}
	objs, err := manifest.Parse(name, r)
	if err != nil {
		return nil, cliclient.Errorf("see docs/manifests.md for the schema", "%v", err)
	}
	if len(objs) == 0 {
		return nil, cliclient.Errorf("see docs/manifests.md for the schema", "%s holds no objects", name)
	}
	for i := range objs {
		objs[i].Dir = dir
	}
	return objs, nil
}

func newApplyCommand() *cobra.Command {
	var (
		server *string
		files  []string
	)
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR [-f ...]",
		Short: "Create or update the workloads, configs, secrets and node groups of a manifest",
		Long: `Apply a manifest: multi-document YAML of Workload, Config, Secret and NodeGroup
objects (see docs/manifests.md and docs/cloud.md), from every file given and
every *.yaml and *.yml file of a directory given. Node groups, configs and
secrets are applied before the workloads that use them; every object is checked before any is written. apply prints
one line per object: created, configured or unchanged. Applying the same
manifest again changes nothing. apply does not wait for workloads to be ready
(see 'wasmorch get workloads').`,
		Example: `  wasmorch apply -f testdata/app.yaml
  wasmorch apply -f configs.yaml -f workloads.yaml
  wasmorch apply -f deploy/
  cat app.yaml | wasmorch apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			objs, err := readManifests(cmd, files)
			if err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			results, err := client.Apply(cmd.Context(), objs, ".", false)
			out := cmd.OutOrStdout()
			for _, r := range results {
				fmt.Fprintln(out, cliclient.SetSummary(strings.ToLower(r.Kind), r.Name, r.Outcome == "created", r.Outcome != "unchanged", r.Rolled))
			}
			return err
		},
	}
	server = addServerFlag(cmd)
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "a manifest (YAML, several documents separated by ---), a directory of them, or - for stdin (repeatable)")
	commandLineOnly(cmd.Flags(), "filename")
	return cmd
}

func newDiffCommand() *cobra.Command {
	var (
		server *string
		files  []string
	)
	cmd := &cobra.Command{
		Use:   "diff -f FILE|DIR [-f ...]",
		Short: "Show what 'apply -f FILE' would change, without changing anything",
		Long: `Compare a manifest with the cluster: for each object, whether apply would
create it, configure it (with the fields or keys that differ; a secret's
values are never shown) or leave it unchanged. Exits 0 whether or not there
are differences.`,
		Example: "  wasmorch diff -f testdata/app.yaml",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			objs, err := readManifests(cmd, files)
			if err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			results, err := client.Apply(cmd.Context(), objs, ".", true)
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
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "a manifest (YAML, several documents separated by ---), a directory of them, or - for stdin (repeatable)")
	commandLineOnly(cmd.Flags(), "filename")
	return cmd
}
