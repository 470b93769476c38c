package controlplane

import (
	"regexp"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/internal/httptrigger"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

var (
	dnsLabel = regexp.MustCompile(`^[a-z]([-a-z0-9]*[a-z0-9])?$`)
	envName  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]*$`)
	nodeName = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$`)
)

// Limits on what one workload may ask for.
const (
	MaxReplicas       = 100000
	DefaultMemory     = 128 << 20
	MinMemory         = 64 << 10
	MaxMemory         = 4 << 30
	maxWorkloadNameLn = 63
)

// ValidateName checks a workload name: a DNS label (RFC 1123), so that it
// can later appear in host names and routes.
func ValidateName(name string) error {
	if name == "" {
		return errdefs.Invalidf("workload name must not be empty")
	}
	if len(name) > maxWorkloadNameLn || !dnsLabel.MatchString(name) {
		return errdefs.Invalidf("workload name %q is not a DNS label: use 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-'", name)
	}
	return nil
}

// validateSpec checks a workload spec on its own (not against the store).
func validateSpec(spec *v1.WorkloadSpec) error {
	if spec == nil {
		return errdefs.Invalidf("workload spec is missing")
	}
	if err := validateRollout(spec); err != nil { // rollouts
		return err
	}
	if err := validateCanary(spec); err != nil { // canary.go
		return err
	}
	switch spec.GetKind() {
	case "", "wasm":
		if spec.GetImage() != "" {
			return errdefs.Invalidf("image %q belongs to a container workload, not a wasm one", spec.GetImage())
		}
		if _, err := blobs.ParseDigest(spec.GetModuleDigest()); err != nil {
			return err
		}
	case kindContainer:
		if err := validateContainerSource(spec); err != nil {
			return err
		}
	default:
		return errdefs.Invalidf("workload kind %q is not supported: use \"wasm\" or \"container\"", spec.GetKind())
	}
	if r := spec.GetReplicas(); r < 0 || r > MaxReplicas {
		return errdefs.Invalidf("replicas %d is outside 0..%d", r, MaxReplicas)
	}
	if m := spec.GetMemoryBytes(); m != 0 && (m < MinMemory || m > MaxMemory) {
		return errdefs.Invalidf("memory limit %d bytes is outside %d bytes (one wasm page) .. 4 GiB", m, MinMemory)
	}
	for _, e := range spec.GetEnv() {
		if !envName.MatchString(e.GetName()) {
			return errdefs.Invalidf("environment variable name %q is not valid", e.GetName())
		}
	}
	if _, ok := v1.RestartPolicy_name[int32(spec.GetRestart())]; !ok {
		return errdefs.Invalidf("restart policy %d is not known", spec.GetRestart())
	}
	if err := validatePlacement(spec); err != nil {
		return err
	}
	if err := httptrigger.Validate(spec.GetHttp()); err != nil {
		return err
	}
	if err := validateFallback(spec); err != nil {
		return err
	}
	if err := validateReferences(spec); err != nil { // configs
		return err
	}
	return nil
}
