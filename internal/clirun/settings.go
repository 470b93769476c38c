// Package clirun is what the wasmorch binaries (wasmorch, wasmorch-agent)
// share around their cobra commands: settings from WASMORCH_* variables
// and the config file for every flag, and one command line run to an exit
// status with every failure as one line saying what to do.
package clirun

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/wasmorch/wasmorch/internal/clierr"
)

// Settings come, strongest first, from a flag, a WASMORCH_<FLAG> variable
// (dashes become underscores: --data-dir is WASMORCH_DATA_DIR), a key
// named like the flag in the config file, and the flag's default.
const (
	EnvPrefix  = "WASMORCH"
	ConfigFlag = "config"
	// onlyOnCommandLine marks flags that name or describe one object (the
	// workload deploy creates, the replicas scale sets): taken from the
	// environment or the config file they would silently apply to every
	// invocation.
	onlyOnCommandLine = "wasmorch/only-on-command-line"
)

// ignoredFlags are never filled from settings: they are about this
// invocation of the binary itself.
var ignoredFlags = map[string]bool{ConfigFlag: true, "help": true, "version": true}

// CommandLineOnly marks flags as taken from the command line alone.
func CommandLineOnly(fs *pflag.FlagSet, names ...string) {
	for _, n := range names {
		if err := fs.SetAnnotation(n, onlyOnCommandLine, []string{"true"}); err != nil {
			panic(err) // a misspelt flag name: a bug in this package
		}
	}
}

// ApplySettings fills every flag of cmd that was not given on the command
// line from the environment or the config file. It runs before every
// command (the root's PersistentPreRunE), so each command gets the same
// precedence without code of its own.
func ApplySettings(cmd *cobra.Command) error {
	path, explicit := ConfigPath(cmd)
	file, err := readConfig(path, explicit)
	if err != nil {
		return &clierr.Error{
			What:  fmt.Sprintf("cannot read the config file %s: %v", path, err),
			Hint:  "fix it, or point --config or WASMORCH_CONFIG at another file",
			Cause: err,
		}
	}

	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || ignoredFlags[f.Name] || f.Annotations[onlyOnCommandLine] != nil {
			return
		}
		value, source := any(nil), ""
		if env := EnvName(f.Name); os.Getenv(env) != "" {
			value, source = os.Getenv(env), env
		} else if v, ok := file[f.Name]; ok {
			value, source = v, fmt.Sprintf("config file key %q in %s", f.Name, path)
		} else {
			return
		}
		if err := setFlag(cmd.Flags(), f, value); err != nil {
			errs = append(errs, &clierr.Error{
				What:  fmt.Sprintf("invalid value for --%s from %s: %v", f.Name, source, err),
				Hint:  fmt.Sprintf("fix it, or pass --%s", f.Name),
				Cause: err,
			})
		}
	})
	return errors.Join(errs...)
}

// readConfig reads the config file at path, a YAML mapping of flag names
// (in any case) to values, into a map keyed by lower-case name. A file
// that does not exist is no settings unless it was named explicitly.
func readConfig(path string, explicit bool) (map[string]any, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		if !explicit && errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	settings := make(map[string]any, len(doc))
	for k, v := range doc {
		settings[strings.ToLower(k)] = v
	}
	return settings, nil
}

// EnvName is the variable that sets a flag: --data-dir is WASMORCH_DATA_DIR.
func EnvName(flag string) string {
	return EnvPrefix + "_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// ConfigPath is the config file to read: --config or WASMORCH_CONFIG
// (explicit: it must exist), else $XDG_CONFIG_HOME/wasmorch/config.yaml or
// ~/.config/wasmorch/config.yaml (read only if it exists).
func ConfigPath(cmd *cobra.Command) (path string, explicit bool) {
	if f := cmd.Flags().Lookup(ConfigFlag); f != nil && f.Changed {
		return f.Value.String(), true
	}
	if p := os.Getenv(EnvName(ConfigFlag)); p != "" {
		return p, true
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", false
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "wasmorch", "config.yaml"), false
}

// setFlag sets a flag from a settings value: a string from the
// environment, or a scalar, list or map from the config file.
func setFlag(fs *pflag.FlagSet, f *pflag.Flag, value any) error {
	switch x := value.(type) {
	case []any:
		items := make([]string, 0, len(x))
		for _, it := range x {
			items = append(items, fmt.Sprint(it))
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			if err := sv.Replace(items); err != nil {
				return err
			}
			f.Changed = true
			return nil
		}
		return fs.Set(f.Name, strings.Join(items, ","))
	case map[string]any:
		pairs := make([]string, 0, len(x))
		for k, val := range x {
			pairs = append(pairs, k+"="+fmt.Sprint(val))
		}
		sort.Strings(pairs)
		return setFlag(fs, f, toAnySlice(pairs))
	case map[any]any:
		pairs := make([]string, 0, len(x))
		for k, val := range x {
			pairs = append(pairs, fmt.Sprint(k)+"="+fmt.Sprint(val))
		}
		sort.Strings(pairs)
		return setFlag(fs, f, toAnySlice(pairs))
	case nil:
		return nil
	}
	return fs.Set(f.Name, fmt.Sprint(value))
}

func toAnySlice(s []string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}
