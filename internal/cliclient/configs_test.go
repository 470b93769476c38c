package cliclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseDataReadsPairsFilesAndStdinWithoutQuotingValues(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte("from-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := ParseData([]string{"A=1=2", "B=", "C=@" + file, "D=@-"}, true, strings.NewReader("from-stdin"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"A": "1=2", "B": "", "C": "from-file", "D": "from-stdin"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	// Without files (configs), @ is literal.
	if got, err := ParseData([]string{"A=@x"}, false, nil); err != nil || got["A"] != "@x" {
		t.Errorf("config value @x: %v, %v", got, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"A=1", "secret-value-without-equals"}, "argument 2 is not KEY=VALUE"},
		{[]string{"=v"}, "empty key"},
		{[]string{"A=1", "A=2"}, "key A is given twice"},
		{[]string{"A=@-", "B=@-"}, "stdin was read already"},
		{[]string{"A=@" + filepath.Join(t.TempDir(), "missing")}, "key A:"},
	} {
		_, err := ParseData(tc.args, true, strings.NewReader("x"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseData(%q) = %v, want an error containing %q", tc.args, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret-value") {
			t.Errorf("the error quotes a value: %v", err)
		}
	}
}
