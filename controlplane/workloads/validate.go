// Package workloads holds the rules of what users ask the cluster to run,
// which the API and the controllers share: what a workload spec, a name,
// a label or a config may be (Validate and its parts), how a rollout is
// bounded (RolloutBounds) and what makes a new revision (SameRevision),
// the revisions kept of each workload, and the blobs a spec runs. It is
// decision logic over specs and a few etcd operations on revisions; it
// knows nothing of the member that uses it.
package workloads

import (
	"regexp"
	"strings"

	"github.com/distribution/reference"
	"google.golang.org/protobuf/proto"

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
	// MaxSpecBytes bounds a spec, encoded: every instance record carries a
	// copy, and the controller writes many records per transaction under
	// etcd's request limit (2 MiB). Configs and secrets, resolved when a
	// node is sent its set, do not count.
	MaxSpecBytes      = 128 << 10
	MaxReplicas       = 100000
	DefaultMemory     = 128 << 20
	MinMemory         = 64 << 10
	MaxMemory         = 4 << 30
	maxWorkloadNameLn = 63
)

// Label keys and values, after Kubernetes: an optional DNS prefix and a
// name of letters, digits, '-', '_' and '.'.
var (
	labelKey   = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$`)
	labelValue = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
	goName     = regexp.MustCompile(`^[a-z0-9]+$`)
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

// Validate checks a workload spec on its own (not against the store).
func Validate(spec *v1.WorkloadSpec) error {
	if spec == nil {
		return errdefs.Invalidf("workload spec is missing")
	}
	if n := proto.Size(spec); n > MaxSpecBytes {
		return errdefs.Invalidf("the workload's spec is %d KiB encoded, more than the %d KiB a workload may have (each of its instances carries a copy): move long environment values, arguments or files into a config or secret", (n+1023)>>10, MaxSpecBytes>>10)
	}
	if err := validateRollout(spec); err != nil { // rollouts
		return err
	}
	if err := validateCanary(spec); err != nil { // canary.go
		return err
	}
	if err := validateSource(spec); err != nil { // registry
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
	case KindContainer:
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
	if err := validateStorage(spec); err != nil { // storage.go
		return err
	}
	return nil
}

const KindContainer = "container"

// validateContainerSource checks a container spec's image on its own.
func validateContainerSource(spec *v1.WorkloadSpec) error {
	digest, image := spec.GetModuleDigest(), spec.GetImage()
	switch {
	case digest == "" && image == "":
		return errdefs.Invalidf("a container workload needs an image: an uploaded OCI image archive or an image reference")
	case digest != "" && image != "":
		return errdefs.Invalidf("a container workload runs an uploaded image archive or an image reference (%q), not both", image)
	case digest != "":
		_, err := blobs.ParseDigest(digest)
		return err
	}
	if _, err := reference.ParseNormalizedNamed(image); err != nil {
		return errdefs.Invalidf("image reference %q is not valid: %v", image, err)
	}
	return nil
}

// maxPort is the highest TCP port.
const maxPort = 65535

// validateFallback checks a spec's fallback image and HTTP port on their
// own.
func validateFallback(spec *v1.WorkloadSpec) error {
	image, digest := spec.GetFallbackImage(), spec.GetFallbackArchiveDigest()
	if err := validateService(spec); err != nil { // service.go
		return err
	}
	if spec.GetKind() == KindContainer && (image != "" || digest != "") {
		return errdefs.Invalidf("a fallback image belongs to a wasm workload; a container workload runs its image everywhere")
	}
	switch {
	case image != "" && digest != "":
		return errdefs.Invalidf("a fallback is an image reference (%q) or an uploaded image archive, not both", image)
	case digest != "":
		_, err := blobs.ParseDigest(digest)
		return err
	case image != "":
		if _, err := reference.ParseNormalizedNamed(image); err != nil {
			return errdefs.Invalidf("fallback image reference %q is not valid: %v", image, err)
		}
	}
	return nil
}

// MaxCPUMillis bounds a workload's CPU request: 1,024 cores.
const MaxCPUMillis = 1 << 20

// validatePlacement checks the scheduling parts of a spec.
func validatePlacement(spec *v1.WorkloadSpec) error {
	if c := spec.GetCpuMillis(); c < 0 || c > MaxCPUMillis {
		return errdefs.Invalidf("cpu request %dm is outside 0..%dm", c, MaxCPUMillis)
	}
	pl := spec.GetPlacement()
	for k, v := range pl.GetSelector() {
		if err := ValidateLabel(k, v); err != nil {
			return errdefs.Invalidf("selector: %v", err)
		}
	}
	if s := pl.GetSpread(); s != "" && (len(s) > 63 || !labelKey.MatchString(s)) {
		return errdefs.Invalidf("spread label key %q is not a label key: use letters, digits, '-', '_' and '.', optionally after a 'prefix/'", s)
	}
	for _, a := range pl.GetArch() {
		if !goName.MatchString(a) {
			return errdefs.Invalidf("arch %q is not an architecture name such as amd64 or arm64", a)
		}
	}
	for _, o := range pl.GetOs() {
		if !goName.MatchString(o) {
			return errdefs.Invalidf("os %q is not an operating system name such as linux", o)
		}
	}
	return nil
}

// ValidateLabel checks one node label or selector entry.
func ValidateLabel(k, v string) error {
	if len(k) > 253 || !labelKey.MatchString(k) {
		return errdefs.Invalidf("label key %q is not valid: use letters, digits, '-', '_' and '.', optionally after a 'prefix/'", k)
	}
	if len(v) > 63 || !labelValue.MatchString(v) {
		return errdefs.Invalidf("label value %q of %q is not valid: use at most 63 letters, digits, '-', '_' and '.'", v, k)
	}
	if k == LostAfterLabel {
		_, err := ParseLostAfter(v)
		return err
	}
	return nil
}

// ValidateNodeName checks a node name: a DNS name of labels.
func ValidateNodeName(name string) error {
	if name == "" || len(name) > 253 || !nodeName.MatchString(name) {
		return errdefs.Invalidf("node name %q is not valid: use letters, digits, '-', '_' and '.'", name)
	}
	return nil
}

// MaxConfigBytes bounds one config's or secret's data, well under etcd's
// request limit.
const MaxConfigBytes = 512 << 10

// ValidateObjectName checks a config or secret name: a DNS label, like a
// workload's.
func ValidateObjectName(kind, name string) error {
	if name == "" {
		return errdefs.Invalidf("%s name must not be empty", kind)
	}
	if len(name) > maxWorkloadNameLn || !dnsLabel.MatchString(name) {
		return errdefs.Invalidf("%s name %q is not a DNS label: use 1-63 lowercase letters, digits and '-', starting with a letter and not ending with '-'", kind, name)
	}
	return nil
}

// ValidateData checks a config's or secret's keys (they become environment
// variable and file names) and size. Values are never quoted in errors.
func ValidateData(kind, name string, data map[string]string) error {
	size := 0
	for k, v := range data {
		if !envName.MatchString(k) {
			return errdefs.Invalidf("%s %s: key %q is not valid: use letters, digits, '_', '.' and '-', starting with a letter or '_'", kind, name, k)
		}
		if strings.IndexByte(v, 0) >= 0 {
			return errdefs.Invalidf("%s %s: the value of %s contains a NUL byte", kind, name, k)
		}
		size += len(k) + len(v)
	}
	if size > MaxConfigBytes {
		return errdefs.Invalidf("%s %s holds %d bytes, more than %d", kind, name, size, MaxConfigBytes)
	}
	return nil
}

// validateReferences checks the configs and secrets a spec names, on their
// own (checkReferences checks that they exist).
func validateReferences(spec *v1.WorkloadSpec) error {
	for _, ref := range []struct {
		kind  string
		names []string
	}{{"config", spec.GetConfigs()}, {"secret", spec.GetSecrets()}, {"config", spec.GetConfigFiles()}, {"secret", spec.GetSecretFiles()}} {
		seen := map[string]bool{}
		for _, n := range ref.names {
			if err := ValidateObjectName(ref.kind, n); err != nil {
				return err
			}
			if seen[n] {
				return errdefs.Invalidf("%s %q is named twice", ref.kind, n)
			}
			seen[n] = true
		}
	}
	if len(spec.GetFiles()) > 0 {
		return errdefs.Invalidf("files are filled in by the control plane from config_files and secret_files, not given")
	}
	return nil
}

// validateSource checks where a module pulled from a registry came from:
// an oci:// reference and the manifest digest it resolved to, both or
// neither.
func validateSource(spec *v1.WorkloadSpec) error {
	ref, digest := spec.GetSourceReference(), spec.GetSourceDigest()
	if ref == "" && digest == "" {
		return nil
	}
	if !strings.HasPrefix(ref, "oci://") {
		return errdefs.Invalidf("source reference %q is not an oci:// reference", ref)
	}
	if _, err := blobs.ParseDigest(digest); err != nil {
		return errdefs.Invalidf("source digest of %s: %v", ref, err)
	}
	if spec.GetImage() != "" {
		return errdefs.Invalidf("a workload pulled from %s runs what was pulled, not image %q", ref, spec.GetImage())
	}
	return nil
}
