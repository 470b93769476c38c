package cliclient

import (
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/wasmorch/wasmorch/internal/cliout"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// maxMemoryBytes is the whole wasm32 address space: a larger limit could
// never be used, so it is surely a typo.
const maxMemoryBytes = 4 << 30

// nameRules is the hint shown with every invalid workload name.
const nameRules = "names are 1-63 lowercase letters, digits and '-', start with a letter and do not end with '-'"

// ValidateName checks that name is a DNS label as workload names must be:
// lowercase a-z, 0-9 and '-', 1 to 63 characters, starting with a letter
// and not ending with '-'.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("the name is empty")
	case len(name) > 63:
		return fmt.Errorf("%q is %d characters long, more than 63", name, len(name))
	case name[0] < 'a' || name[0] > 'z':
		return fmt.Errorf("%q does not start with a lowercase letter", name)
	case name[len(name)-1] == '-':
		return fmt.Errorf("%q ends with '-'", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return fmt.Errorf("%q contains %q", name, r)
		}
	}
	return nil
}

// NameFromFile derives a workload name from a module's path: its base name
// without the .wasm extension.
func NameFromFile(path string) string {
	return strings.TrimSuffix(filepath.Base(path), ".wasm")
}

// byteUnits maps each accepted size suffix to its multiplier: the binary
// units as Kubernetes spells them (Ki, Mi, Gi) and with a trailing B, and
// the decimal ones.
var byteUnits = map[string]float64{
	"": 1, "B": 1,
	"k": 1e3, "K": 1e3, "KB": 1e3, "kB": 1e3,
	"M": 1e6, "MB": 1e6,
	"G": 1e9, "GB": 1e9,
	"Ki": 1 << 10, "KiB": 1 << 10,
	"Mi": 1 << 20, "MiB": 1 << 20,
	"Gi": 1 << 30, "GiB": 1 << 30,
}

// ParseMemory parses a memory size such as "64Mi", "128MiB", "1Gi", "1.5Gi"
// or "1048576" into bytes. An empty string or "0" means the runtime's
// default and returns 0.
func ParseMemory(s string) (int64, error) {
	return parseBytes(s, maxMemoryBytes, "4Gi, the most a wasm32 module can address")
}

// parseBytes parses a size as ParseMemory and ParseSize do, refusing one
// over limit, which the error names as most.
func parseBytes(s string, limit float64, most string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	i := strings.IndexFunc(s, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	if i < 0 {
		i = len(s)
	}
	num, unit := s[:i], s[i:]
	mult, ok := byteUnits[unit]
	if num == "" || !ok {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	bytes := f * mult
	if bytes != math.Trunc(bytes) {
		return 0, fmt.Errorf("%q is not a whole number of bytes", s)
	}
	if bytes > limit {
		return 0, fmt.Errorf("%q is more than %s", s, most)
	}
	return int64(bytes), nil
}

// ParseEnv parses K=V pairs. Values may be empty or contain '='; keys may
// not be empty. A key given twice keeps its last value, in the position
// of its first appearance.
func ParseEnv(pairs []string) ([]*wasmorchv1.EnvVar, error) {
	var vars []*wasmorchv1.EnvVar
	index := map[string]int{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return nil, fmt.Errorf("%q is not K=V", p)
		}
		if k == "" {
			return nil, fmt.Errorf("%q has an empty name", p)
		}
		if strings.ContainsRune(p, 0) {
			return nil, fmt.Errorf("%q contains a NUL byte", p)
		}
		if i, seen := index[k]; seen {
			vars[i].Value = v
			continue
		}
		index[k] = len(vars)
		vars = append(vars, &wasmorchv1.EnvVar{Name: k, Value: v})
	}
	return vars, nil
}

// ParseRestart parses a restart policy: always, on-failure or never. The
// empty string means always.
func ParseRestart(s string) (wasmorchv1.RestartPolicy, error) {
	if s == "" {
		return wasmorchv1.RestartPolicy_RESTART_POLICY_ALWAYS, nil
	}
	for _, p := range cliout.RestartPolicies {
		if s == cliout.RestartName(p) {
			return p, nil
		}
	}
	return 0, fmt.Errorf("%q is not a restart policy", s)
}
