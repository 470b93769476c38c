package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/wasmorch/wasmorch/internal/cliclient"
	"github.com/wasmorch/wasmorch/internal/cliout"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// newConfigCommand is `wasmorch config set|get|list|delete`.
func newConfigCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Manage configs: key-value sets that workloads see as environment variables",
		Long: `A config is a named set of KEY=VALUE pairs. A workload deployed with
--config NAME (or naming it in a manifest) sees every key as an environment
variable. Changing a config replaces the instances of the workloads that use
it, so that they see the new values.`,
	}
	cmd.AddCommand(newConfigSetCommand(), newConfigGetCommand(), newConfigListCommand(), newConfigDeleteCommand())
	return cmd
}

// newSecretCommand is `wasmorch secret set|get|list|delete|rotate-key`.
func newSecretCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Manage secrets: configs kept encrypted, never printed",
		Long: `A secret is a config whose values are encrypted at rest (AES-256-GCM) and
never shown: get and list print its keys and a digest only. A workload
deployed with --secret NAME sees every key as an environment variable.`,
	}
	cmd.AddCommand(newSecretSetCommand(), newSecretGetCommand(), newSecretListCommand(), newSecretDeleteCommand(), newSecretRotateKeyCommand())
	return cmd
}

func newConfigSetCommand() *cobra.Command {
	var server *string
	cmd := &cobra.Command{
		Use:     "set NAME KEY=VALUE...",
		Short:   "Create a config or replace its data with exactly the keys given",
		Example: "  wasmorch config set app-config LOG_LEVEL=debug FEATURE_X=on",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return cliclient.Errorf("e.g. 'wasmorch config set app-config LOG_LEVEL=debug'", "config set takes a name and KEY=VALUE pairs")
			}
			if err := cliclient.CheckObjectName("config", args[0]); err != nil {
				return err
			}
			data, err := cliclient.ParseData(args[1:], false, nil)
			if err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			resp, err := client.SetConfig(cmd.Context(), args[0], data, false)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), cliclient.SetSummary("config", args[0], resp.GetCreated(), resp.GetChanged(), resp.GetRolled()))
			return nil
		},
	}
	server = addServerFlag(cmd)
	return cmd
}

func newSecretSetCommand() *cobra.Command {
	var server *string
	cmd := &cobra.Command{
		Use:   "set NAME KEY=VALUE|KEY=@FILE|KEY=@-...",
		Short: "Create a secret or replace its data with exactly the keys given",
		Long: `Create a secret or replace its data. A value @FILE is read from FILE, and @-
from stdin, so that it stays out of the shell's history. Values are never
printed.`,
		Example: `  wasmorch secret set db-creds user=app password=@./db-password.txt
  printf %s "$TOKEN" | wasmorch secret set api-token token=@-`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 {
				return cliclient.Errorf("e.g. 'wasmorch secret set db-creds password=@./pw.txt'", "secret set takes a name and KEY=VALUE pairs")
			}
			if err := cliclient.CheckObjectName("secret", args[0]); err != nil {
				return err
			}
			data, err := cliclient.ParseData(args[1:], true, cmd.InOrStdin())
			if err != nil {
				return err
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			resp, err := client.SetSecret(cmd.Context(), args[0], data, false)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), cliclient.SetSummary("secret", args[0], resp.GetCreated(), resp.GetChanged(), resp.GetRolled()))
			return nil
		},
	}
	server = addServerFlag(cmd)
	return cmd
}

// configView and secretView are how configs and secrets print in -o json
// and yaml.
type configView struct {
	Name    string            `json:"name"`
	Data    map[string]string `json:"data"`
	Created time.Time         `json:"created"`
	Updated time.Time         `json:"updated"`
}

type secretView struct {
	Name    string    `json:"name"`
	Keys    []string  `json:"keys"`
	Digest  string    `json:"digest"`
	KeyID   string    `json:"keyId"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

func configViewOf(c *wasmorchv1.Config) configView {
	d := c.GetData()
	if d == nil {
		d = map[string]string{}
	}
	return configView{Name: c.GetName(), Data: d, Created: time.Unix(0, c.GetCreatedUnixNano()).UTC(), Updated: time.Unix(0, c.GetUpdatedUnixNano()).UTC()}
}

func secretViewOf(s *wasmorchv1.SecretView) secretView {
	keys := s.GetKeys()
	if keys == nil {
		keys = []string{}
	}
	return secretView{Name: s.GetName(), Keys: keys, Digest: s.GetDigest(), KeyID: s.GetKeyId(),
		Created: time.Unix(0, s.GetCreatedUnixNano()).UTC(), Updated: time.Unix(0, s.GetUpdatedUnixNano()).UTC()}
}

// encodeAs writes v as JSON or YAML.
func encodeAs(w io.Writer, format cliout.Format, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if format == cliout.YAML {
		if b, err = yaml.JSONToYAML(b); err != nil {
			return err
		}
	} else {
		b = append(b, '\n')
	}
	_, err = w.Write(b)
	return err
}

func table(w io.Writer, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// objectCommand builds get, list and delete commands, which differ only in
// what they call and print.
func objectCommand(use, short, example string, nargs int, run func(cmd *cobra.Command, client *cliclient.Client, args []string, format cliout.Format) error) *cobra.Command {
	var server *string
	var output string
	cmd := &cobra.Command{
		Use:     use,
		Short:   short,
		Example: example,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) != nargs {
				return cliclient.Errorf("e.g. '"+strings.TrimSpace(example)+"'", "%s %s takes %d argument(s), got %d", cmd.Parent().Name(), cmd.Name(), nargs, len(args))
			}
			format, err := cliout.ParseFormat(output)
			if err != nil {
				return cliclient.Errorf("use -o table, json or yaml", "invalid -o: %v", err)
			}
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			return run(cmd, client, args, format)
		},
	}
	server = addServerFlag(cmd)
	if !strings.HasPrefix(use, "delete") {
		cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	}
	return cmd
}

func newConfigGetCommand() *cobra.Command {
	return objectCommand("get NAME", "Print a config's keys and values", "  wasmorch config get app-config", 1,
		func(cmd *cobra.Command, client *cliclient.Client, args []string, format cliout.Format) error {
			c, err := client.GetConfig(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if format != cliout.Table {
				return encodeAs(cmd.OutOrStdout(), format, configViewOf(c))
			}
			rows := [][]string{{"KEY", "VALUE"}}
			keys := make([]string, 0, len(c.GetData()))
			for k := range c.GetData() {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				rows = append(rows, []string{k, c.GetData()[k]})
			}
			return table(cmd.OutOrStdout(), rows)
		})
}

func newConfigListCommand() *cobra.Command {
	return objectCommand("list", "List configs", "  wasmorch config list", 0,
		func(cmd *cobra.Command, client *cliclient.Client, _ []string, format cliout.Format) error {
			cs, err := client.ListConfigs(cmd.Context())
			if err != nil {
				return err
			}
			if format != cliout.Table {
				views := make([]configView, 0, len(cs))
				for _, c := range cs {
					views = append(views, configViewOf(c))
				}
				return encodeAs(cmd.OutOrStdout(), format, views)
			}
			rows := [][]string{{"NAME", "KEYS", "AGE"}}
			now := time.Now()
			for _, c := range cs {
				rows = append(rows, []string{c.GetName(), fmt.Sprint(len(c.GetData())), cliout.Age(now, time.Unix(0, c.GetCreatedUnixNano()))})
			}
			return table(cmd.OutOrStdout(), rows)
		})
}

func newConfigDeleteCommand() *cobra.Command {
	return objectCommand("delete NAME", "Delete a config that no workload uses", "  wasmorch config delete app-config", 1,
		func(cmd *cobra.Command, client *cliclient.Client, args []string, _ cliout.Format) error {
			if err := client.DeleteConfig(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "config/%s deleted\n", args[0])
			return nil
		})
}

func newSecretGetCommand() *cobra.Command {
	return objectCommand("get NAME", "Print a secret's keys and digest (never its values)", "  wasmorch secret get db-creds", 1,
		func(cmd *cobra.Command, client *cliclient.Client, args []string, format cliout.Format) error {
			s, err := client.GetSecret(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if format != cliout.Table {
				return encodeAs(cmd.OutOrStdout(), format, secretViewOf(s))
			}
			return table(cmd.OutOrStdout(), [][]string{
				{"NAME:", s.GetName()},
				{"KEYS:", strings.Join(s.GetKeys(), ", ")},
				{"DIGEST:", s.GetDigest()},
				{"KEY ID:", s.GetKeyId()},
			})
		})
}

func newSecretListCommand() *cobra.Command {
	return objectCommand("list", "List secrets: their keys and digests, never values", "  wasmorch secret list", 0,
		func(cmd *cobra.Command, client *cliclient.Client, _ []string, format cliout.Format) error {
			ss, err := client.ListSecrets(cmd.Context())
			if err != nil {
				return err
			}
			if format != cliout.Table {
				views := make([]secretView, 0, len(ss))
				for _, s := range ss {
					views = append(views, secretViewOf(s))
				}
				return encodeAs(cmd.OutOrStdout(), format, views)
			}
			rows := [][]string{{"NAME", "KEYS", "DIGEST", "AGE"}}
			now := time.Now()
			for _, s := range ss {
				rows = append(rows, []string{s.GetName(), strings.Join(s.GetKeys(), ","), s.GetDigest(), cliout.Age(now, time.Unix(0, s.GetCreatedUnixNano()))})
			}
			return table(cmd.OutOrStdout(), rows)
		})
}

func newSecretDeleteCommand() *cobra.Command {
	return objectCommand("delete NAME", "Delete a secret that no workload uses", "  wasmorch secret delete db-creds", 1,
		func(cmd *cobra.Command, client *cliclient.Client, args []string, _ cliout.Format) error {
			if err := client.DeleteSecret(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "secret/%s deleted\n", args[0])
			return nil
		})
}

func newSecretRotateKeyCommand() *cobra.Command {
	var server *string
	cmd := &cobra.Command{
		Use:   "rotate-key",
		Short: "Re-encrypt every secret under a new data key",
		Long: `Create a new data key, make it the one new secrets are sealed with, and
re-encrypt every secret under it. Secrets keep their values and digests, and
the workloads using them are not restarted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			client, err := dial(cmd, *server)
			if err != nil {
				return err
			}
			defer client.Close()
			resp, err := client.RotateSecretKey(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "new secret key %s: %d secret(s) re-encrypted\n", resp.GetKeyId(), resp.GetSecrets())
			return nil
		},
	}
	server = addServerFlag(cmd)
	return cmd
}
