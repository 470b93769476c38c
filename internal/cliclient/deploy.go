package cliclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"strings"
	"time"

	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	"github.com/wasmorch/wasmorch/internal/cliout"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

const (
	maxReplicas     = math.MaxInt32
	uploadChunkSize = 1 << 20 // stays well under gRPC's 4 MiB message limit
	mediaTypeWasm   = "application/wasm"
	pollInterval    = 100 * time.Millisecond
)

// DefaultDeployTimeout is how long deploy waits for a workload by default.
const DefaultDeployTimeout = 2 * time.Minute

// DeployConfig is what `wasmorch deploy` was asked to do, as typed on the
// command line; Deploy validates it before it touches the network.
type DeployConfig struct {
	File     string   // path of the .wasm module
	Name     string   // empty: the file's base name without .wasm
	Replicas int      // ≥ 0
	Env      []string // K=V
	Memory   string   // per-instance limit such as "64Mi"; empty: the runtime's default
	Scratch  string   // state: the size of each instance's writable /tmp ("64Mi"); empty: none
	Volumes  []string // state: named volumes, NAME:/PATH
	Mounts   []string // state: host directories, HOST:/PATH[:ro]
	Restart  string   // always, on-failure or never; empty: always
	Args     []string // the module's argv[1:]
	// Timeout bounds the upload and the wait; 0 means DefaultDeployTimeout.
	Timeout time.Duration
	// NoWait returns once the workload is applied.
	NoWait bool
	// Image is an image reference to run as a container instead of File
	// (see container.go).
	Image string
	// Selector holds node labels k=v (items may hold several, comma
	// separated) that a node must carry; Spread names a node label to
	// spread replicas across; CPU is a per-instance request ("250m", "1").
	Selector []string
	Spread   string
	// Arch and OS restrict the nodes by GOARCH/GOOS names (any of).
	Arch []string
	OS   []string
	CPU  string
	// Function makes the workload an HTTP function (see function.go).
	Function FunctionConfig
	// FallbackImage is a module's fallback: an image reference or an OCI
	// image archive's path; Port is where an HTTP container listens
	// (fallback.go).
	FallbackImage string
	Port          int
	// TCP makes a Wasm service with Port a plain TCP service on its
	// node's port, without a route (service.go).
	TCP bool
	// Configs and Secrets name the configs and secrets whose keys become
	// the instances' environment variables (configs.go).
	Configs []string
	Secrets []string
	// ConfigFiles and SecretFiles name those whose keys become read-only
	// files /config/<name>/<key> and /secrets/<name>/<key> (wasm only).
	ConfigFiles []string
	SecretFiles []string
	// rollouts: MaxSurge and MaxUnavailable bound a rolling update: counts
	// ("1") or percentages of replicas ("25%"); empty: 25%.
	MaxSurge, MaxUnavailable string
	// Canary is the share of an HTTP function's traffic ("10%") a new
	// generation gets before it is promoted; CanaryDuration how long its
	// replicas must be ready before the control plane promotes it (0:
	// 'rollout promote' does). See canary.go.
	Canary         string
	CanaryDuration time.Duration
	// ChangeCause is recorded in the revision a spec change makes.
	ChangeCause string
	// Runtime says what File is when it is the digest ("sha256:...") of
	// a blob uploaded already: "container" for an image archive, else
	// a wasm module.
	Runtime string
	// Labels are the workload's labels k=v (items may hold several,
	// comma separated), which `get -l` selects by.
	Labels []string
}

// labels parses Labels.
func (cfg DeployConfig) labels() (map[string]string, error) {
	l, err := ParseSelector(cfg.Labels)
	if err != nil {
		return nil, Errorf("use --labels key=value[,key=value...]", "invalid --labels: %v", err)
	}
	return l, nil
}

// DeployResult is how a deploy ended.
type DeployResult struct {
	Name       string
	Generation int64
	Created    bool // the workload did not exist before
	Waited     bool // false with NoWait
	Ready      int32
	Replicas   int32
	// StartOnly is set for --restart never, where deploy waited for the
	// instances to start rather than to be ready.
	StartOnly bool
	// Canary is set when the wait ended at a canary that waits for
	// 'rollout promote'.
	Canary *Canary
}

// request checks the flags and builds the name and spec, without the
// module's digest and size.
func (cfg DeployConfig) request() (string, *wasmorchv1.WorkloadSpec, error) {
	name := cfg.Name
	if name == "" {
		name = cfg.defaultName()
		if err := ValidateName(name); err != nil {
			return "", nil, Errorf("pass --name with a valid name; "+nameRules, "cannot name the workload after %s: %v", cfg.File, err)
		}
	} else if err := ValidateName(name); err != nil {
		return "", nil, Errorf(nameRules, "invalid --name: %v", err)
	}
	if cfg.Replicas < 0 || cfg.Replicas > maxReplicas {
		return "", nil, Errorf("pass --replicas 0 or more", "invalid --replicas %d", cfg.Replicas)
	}
	mem, err := ParseMemory(cfg.Memory)
	if err != nil {
		return "", nil, Errorf("use bytes or a unit, e.g. 64Mi, 128MiB, 1Gi", "invalid --memory: %v", err)
	}
	scratch, err := ParseSize(cfg.Scratch)
	if err != nil {
		return "", nil, Errorf("use bytes or a unit, e.g. 64Mi, 1Gi", "invalid --scratch: %v", err)
	}
	volumes, err := ParseVolumes(cfg.Volumes)
	if err != nil {
		return "", nil, err
	}
	mounts, err := ParseMounts(cfg.Mounts)
	if err != nil {
		return "", nil, err
	}
	env, err := ParseEnv(cfg.Env)
	if err != nil {
		return "", nil, Errorf("use --env NAME=VALUE", "invalid --env: %v", err)
	}
	restart, err := ParseRestart(cfg.Restart)
	if err != nil {
		return "", nil, Errorf("use --restart always, on-failure or never", "invalid --restart: %v", err)
	}
	if cfg.Timeout < 0 {
		return "", nil, Errorf("use e.g. --timeout 2m", "invalid --timeout %s", cfg.Timeout)
	}
	placement, cpu, err := cfg.placement()
	if err != nil {
		return "", nil, err
	}
	if err := checkRolloutFlags(cfg.MaxSurge, cfg.MaxUnavailable); err != nil {
		return "", nil, err
	}
	if err := checkCanaryFlags(cfg); err != nil {
		return "", nil, err
	}
	trigger, autoscale, replicas, err := cfg.trigger(int32(cfg.Replicas))
	if err != nil {
		return "", nil, err
	}
	return name, &wasmorchv1.WorkloadSpec{
		Placement:   placement,
		CpuMillis:   cpu,
		Kind:        "wasm",
		Replicas:    replicas,
		Http:        trigger,
		Autoscale:   autoscale,
		Env:         env,
		Args:        cfg.Args,
		MemoryBytes: mem,
		Restart:     restart,
		// state (storage.go)
		ScratchBytes: scratch,
		Volumes:      volumes,
		Mounts:       mounts,
		Configs:      cfg.Configs,
		Secrets:      cfg.Secrets,
		ConfigFiles:  cfg.ConfigFiles,
		SecretFiles:  cfg.SecretFiles,
		// rollouts
		MaxSurge:       cfg.MaxSurge,
		MaxUnavailable: cfg.MaxUnavailable,
		// canary.go
		Canary:           cfg.Canary,
		CanaryDurationMs: cfg.CanaryDuration.Milliseconds(),
	}, nil
}

// readModule reads a module file and validates it locally, so that a bad
// file is refused before anything is sent.
func readModule(ctx context.Context, path string, hasFallback bool) ([]byte, error) {
	wasm, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		why := err.Error()
		if errors.As(err, &pe) {
			why = pe.Err.Error()
		}
		hint := "check the path"
		if errors.Is(err, fs.ErrPermission) {
			hint = "check the file's permissions"
		}
		return nil, &Error{What: fmt.Sprintf("cannot read %s: %s", path, why), Hint: hint, Cause: err}
	}
	if err := validateModule(ctx, wasm, hasFallback); err != nil {
		return nil, &Error{
			What:  fmt.Sprintf("%s is not a valid WebAssembly module: %s", path, OneLine(err.Error())),
			Hint:  "build it as a WASI command (wasm32-wasip1) that exports _start",
			Cause: err,
		}
	}
	return wasm, nil
}

// Deploy validates cfg and the module, uploads it, applies the workload
// and, unless cfg.NoWait, waits until it is ready, calling progress with
// a short status line whenever it polls.
func (c *Client) Deploy(ctx context.Context, cfg DeployConfig, progress func(cliout.Step)) (DeployResult, error) {
	name, spec, err := cfg.request()
	if err != nil {
		return DeployResult{}, err
	}
	labels, err := cfg.labels()
	if err != nil {
		return DeployResult{}, err
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultDeployTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var wasm []byte
	var media string
	if ref := cfg.reference(); ref != "" { // registry.go
		err = c.pullSource(ctx, ref, timeout, spec)
	} else {
		wasm, media, err = readSource(ctx, cfg, spec)
	}
	if err != nil {
		return DeployResult{}, err
	}
	fallback, err := readFallback(cfg, spec)
	if err != nil {
		return DeployResult{}, err
	}

	if wasm != nil {
		if err := c.upload(ctx, spec.ModuleDigest, wasm, media); err != nil {
			return DeployResult{}, err
		}
	}
	if fallback != nil {
		if err := c.upload(ctx, spec.FallbackArchiveDigest, fallback, ociarchive.MediaType); err != nil {
			return DeployResult{}, err
		}
	}
	applied, err := call(ctx, c, "", c.api.ApplyWorkload, &wasmorchv1.ApplyWorkloadRequest{Name: name, Spec: spec, ChangeCause: cfg.ChangeCause, Labels: labels})
	if err != nil {
		return DeployResult{}, err
	}
	res := DeployResult{
		Name:       name,
		Generation: applied.GetWorkload().GetGeneration(),
		Created:    applied.GetCreated(),
		Replicas:   spec.Replicas,
		StartOnly:  spec.Restart == wasmorchv1.RestartPolicy_RESTART_POLICY_NEVER,
	}
	if cfg.NoWait {
		return res, nil
	}
	res.Waited = true
	if spec.Replicas == 0 {
		return res, nil
	}
	r, err := c.wait(ctx, name, applied.GetWorkload().GetGeneration(), timeout, progress)
	res.Generation, res.Ready, res.Replicas, res.Canary = r.generation, r.ready, r.replicas, r.held()
	return res, err
}

// upload streams the module: a header, then chunks of at most 1 MiB.
func (c *Client) upload(ctx context.Context, digest string, wasm []byte, mediaType string) error {
	if err := c.connect(ctx); err != nil {
		return err
	}
	stream, err := c.api.UploadBlob(ctx)
	if err != nil {
		return c.failure(err, "")
	}
	send := func(req *wasmorchv1.UploadRequest) bool {
		// io.EOF means the server ended the stream; CloseAndRecv says why.
		return stream.Send(req) == nil
	}
	ok := send(&wasmorchv1.UploadRequest{Part: &wasmorchv1.UploadRequest_Header{Header: &wasmorchv1.UploadHeader{
		Digest: digest, Size: int64(len(wasm)), MediaType: mediaType,
	}}})
	for off := 0; ok && off < len(wasm); off += uploadChunkSize {
		end := min(off+uploadChunkSize, len(wasm))
		ok = send(&wasmorchv1.UploadRequest{Part: &wasmorchv1.UploadRequest_Chunk{Chunk: wasm[off:end]}})
	}
	resp, err := stream.CloseAndRecv()
	if err != nil && !errors.Is(err, io.EOF) {
		return c.failure(err, "")
	}
	if err != nil || resp.GetDigest() != digest {
		return &Error{
			What: fmt.Sprintf("the server stored %q while %s was sent", resp.GetDigest(), digest),
			Hint: "try again; if it persists, see the server's log",
		}
	}
	return nil
}

// wait polls the workload and its instances until the rollout is done,
// has failed, or ctx ends. gen is the generation waited for (0: the one
// first seen): if the control plane rolls it back automatically, the wait
// fails with the reason; another change is followed.
func (c *Client) wait(ctx context.Context, name string, gen int64, timeout time.Duration, progress func(cliout.Step)) (rollout, error) {
	var last rollout
	var lastErr error
	seen := runsSeen{}
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for {
		r, err := c.poll(ctx, name, seen)
		if err == nil && gen == 0 {
			gen = r.generation
		}
		if err == nil && r.generation > gen {
			// rollouts: a newer generation: an automatic rollback of
			// the one waited for, or someone else's change to follow.
			rev, err := c.rollbackOf(ctx, name, gen, r.generation)
			if err != nil {
				return r, err
			}
			if rev != nil {
				return r, &Error{
					What: fmt.Sprintf("generation %d of %s was rolled back: generation %d is an %s", gen, name, rev.GetGeneration(),
						strings.ReplaceAll(OneLine(rev.GetChangeCause()), ";", ",")),
					Hint: fmt.Sprintf("see 'wasmorch describe workload %s' and 'wasmorch logs %s'", name, name),
				}
			}
			gen = r.generation
		}
		switch {
		case err == nil:
			last, lastErr = r, nil
			if progress != nil {
				progress(cliout.Step{Text: r.summary(name), Done: int(r.count()), Total: int(r.replicas)})
			}
			if failed := r.failure(name); failed != nil {
				return r, failed
			}
			if r.done() || r.held() != nil { // canary.go: held until promoted
				return r, nil
			}
		case ctx.Err() != nil:
			// Interrupted or out of time: the select below says which.
		default:
			if !isTransient(err) {
				return last, err
			}
			// A busy or restarting server: keep polling until the deadline.
			lastErr = err
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.Canceled) {
				return last, c.failure(ctx.Err(), name)
			}
			return last, last.timeoutError(name, timeout, lastErr)
		case <-ticker.C:
		}
	}
}

// rollbackOf finds the automatic rollback among a workload's revisions
// after generation gen up to generation now, or nil.
func (c *Client) rollbackOf(ctx context.Context, name string, gen, now int64) (*wasmorchv1.Revision, error) {
	l, err := call(ctx, c, name, c.api.ListRevisions, &wasmorchv1.ListRevisionsRequest{Workload: name})
	if err != nil {
		return nil, err
	}
	for _, rev := range l.GetRevisions() {
		if rev.GetGeneration() > gen && rev.GetGeneration() <= now && strings.HasPrefix(rev.GetChangeCause(), "automatic rollback") {
			return rev, nil
		}
	}
	return nil, nil
}

// poll reads the workload and its instances once; seen is what the
// wait's earlier polls saw running.
func (c *Client) poll(ctx context.Context, name string, seen runsSeen) (rollout, error) {
	w, err := call(ctx, c, name, c.api.GetWorkload, &wasmorchv1.GetWorkloadRequest{Name: name})
	if err != nil {
		return rollout{}, err
	}
	is, err := c.instanceViews(ctx, &wasmorchv1.ListInstancesRequest{Workload: name})
	if err != nil {
		return rollout{}, err
	}
	return assess(w, is, seen, time.Now()), nil
}

// isTransient reports whether a poll that failed may succeed if tried
// again: the server was busy or between leaders, but not gone.
func isTransient(err error) bool {
	if errors.Is(err, errUnreachable) {
		return false
	}
	return errdefs.IsUnavailable(err) || errdefs.IsConflict(err) || errors.Is(err, context.DeadlineExceeded)
}

// RestartNames lists the restart policies for help texts.
func RestartNames() []string {
	var names []string
	for _, p := range cliout.RestartPolicies {
		names = append(names, cliout.RestartName(p))
	}
	return names
}
