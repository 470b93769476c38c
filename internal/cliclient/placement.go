package cliclient

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// maxCPUMillis matches the control plane's bound: 1,024 cores.
const maxCPUMillis = 1 << 20

// placement builds the scheduling part of a spec from deploy's flags:
// nil when none is set.
func (cfg DeployConfig) placement() (*wasmorchv1.Placement, int64, error) {
	sel, err := ParseSelector(cfg.Selector)
	if err != nil {
		return nil, 0, Errorf("use --selector key=value[,key=value...]", "invalid --selector: %v", err)
	}
	cpu, err := ParseCPU(cfg.CPU)
	if err != nil {
		return nil, 0, Errorf("use millicores or cores, e.g. --cpu 250m or --cpu 1.5", "invalid --cpu: %v", err)
	}
	spread := strings.TrimSpace(cfg.Spread)
	if strings.ContainsAny(spread, "=, ") {
		return nil, 0, Errorf("use --spread LABEL, e.g. --spread zone", "invalid --spread %q: it names one node label key", cfg.Spread)
	}
	arch, err := platformNames("--arch", "amd64,arm64", cfg.Arch)
	if err != nil {
		return nil, 0, err
	}
	oses, err := platformNames("--os", "linux", cfg.OS)
	if err != nil {
		return nil, 0, err
	}
	if len(sel) == 0 && spread == "" && len(arch) == 0 && len(oses) == 0 {
		return nil, cpu, nil
	}
	return &wasmorchv1.Placement{Selector: sel, Spread: spread, Arch: arch, Os: oses}, cpu, nil
}

// platformNames checks --arch and --os values: GOARCH/GOOS-style names,
// lower case letters and digits.
func platformNames(flag, example string, items []string) ([]string, error) {
	var out []string
	for _, it := range items {
		for _, v := range strings.Split(it, ",") {
			v = strings.TrimSpace(v)
			if v == "" {
				continue
			}
			for _, r := range v {
				if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
					return nil, Errorf(fmt.Sprintf("use %s %s", flag, example), "invalid %s %q: names look like %s", flag, v, example)
				}
			}
			out = append(out, v)
		}
	}
	return out, nil
}

// ParseSelector parses k=v items, each of which may hold several
// comma-separated pairs. A key given twice is an error: no node label can
// hold two values.
func ParseSelector(items []string) (map[string]string, error) {
	out := map[string]string{}
	for _, item := range items {
		for _, pair := range strings.Split(item, ",") {
			pair = strings.TrimSpace(pair)
			if pair == "" {
				continue
			}
			k, v, ok := strings.Cut(pair, "=")
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if !ok || k == "" {
				return nil, fmt.Errorf("%q is not key=value", pair)
			}
			if old, dup := out[k]; dup && old != v {
				return nil, fmt.Errorf("%q is given twice (%s and %s)", k, old, v)
			}
			out[k] = v
		}
	}
	return out, nil
}

// ParseCPU parses a CPU request: millicores ("250m") or cores ("0.5", "2").
// Empty means none.
func ParseCPU(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, nil
	}
	var millis float64
	if m, ok := strings.CutSuffix(s, "m"); ok {
		v, err := strconv.ParseFloat(m, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not a CPU amount", s)
		}
		millis = v
	} else {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return 0, fmt.Errorf("%q is not a CPU amount", s)
		}
		millis = v * 1000
	}
	switch {
	case math.IsNaN(millis) || millis < 0:
		return 0, fmt.Errorf("%q is negative", s)
	case millis != math.Trunc(millis):
		return 0, fmt.Errorf("%q is not a whole number of millicores", s)
	case millis > maxCPUMillis:
		return 0, fmt.Errorf("%q is more than %d cores", s, maxCPUMillis/1000)
	}
	return int64(millis), nil
}
