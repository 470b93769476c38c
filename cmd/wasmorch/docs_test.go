package main

import (
	"os"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// commonFlags are described once, in the conventions at the top of
// docs/cli.md, rather than in every command's section.
var commonFlags = map[string]bool{"server": true, "credentials": true}

// TestCLIDocCoversEveryCommandAndFlag keeps docs/cli.md true: every
// command has a "### wasmorch <path>" section, and every flag of the
// command (by --name, or -x for a shorthand) is mentioned in it.
func TestCLIDocCoversEveryCommandAndFlag(t *testing.T) {
	raw, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]string{}
	for _, part := range strings.Split(string(raw), "\n### ")[1:] {
		title, body, _ := strings.Cut(part, "\n")
		body, _, _ = strings.Cut(body, "\n## ")
		sections[strings.TrimSpace(title)] = body
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if sub.Hidden || sub.Name() == "help" {
				continue
			}
			if sub.Runnable() {
				path := sub.CommandPath()
				body, ok := sections[path]
				if !ok {
					t.Errorf("docs/cli.md has no section %q", "### "+path)
				} else {
					sub.LocalFlags().VisitAll(func(f *pflag.Flag) {
						if f.Name == "help" || f.Hidden || commonFlags[f.Name] {
							return
						}
						if !strings.Contains(body, "--"+f.Name) && (f.Shorthand == "" || !strings.Contains(body, "-"+f.Shorthand+" ")) {
							t.Errorf("docs/cli.md section %q does not mention --%s", path, f.Name)
						}
					})
				}
			}
			walk(sub)
		}
	}
	walk(newRootCommand(func() {}))
}
