// Package ctrrt runs OCI containers for the worker through containerd (the
// Go client of containerd v2, which speaks to containerd 1.6 and later): it
// imports an uploaded OCI image archive or pulls an image reference,
// creates each instance as a container in its own containerd namespace with
// memory and CPU limits in the OCI spec and its config and secret files
// bind-mounted read-only (files.go), copies its stdout and stderr into the
// worker's bounded logs, and removes its task, snapshot and files when it
// ends.
// It implements runtimeapi.Runtime, like wasmrt, and is held to the same
// conformance suite.
package ctrrt

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"golang.org/x/sync/singleflight"

	"github.com/wasmorch/wasmorch/ctrrt/ociarchive"
	wdefs "github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

var (
	_ runtimeapi.Runtime = (*Runtime)(nil)
	_ runtimeapi.Adopter = (*Runtime)(nil)
)

// identifier is what containerd accepts as a namespace or container ID.
var identifier = regexp.MustCompile(`^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$`)

// Labels the runtime puts on its containers, so that a restarted worker
// can tell them from anything else in the namespace.
const (
	LabelInstance = "wasmorch.io/instance"
	LabelArtifact = "wasmorch.io/artifact"
	// LabelRestarts keeps the instance's restart count for a worker that
	// adopts the container (runtimeapi.Readopted).
	LabelRestarts = "wasmorch.io/restarts"
)

// NotStartedExitCode is the exit code recorded for an instance whose
// container never ran.
const NotStartedExitCode = -1

// archiveImagePrefix names the images imported from uploaded archives:
// the prefix and the archive's sha256, so that an archive is imported once.
const archiveImagePrefix = "wasmorch.local/archive:"

// cleanupTimeout bounds deleting a task and its container once it exited.
const cleanupTimeout = 30 * time.Second

// Runtime is the containerd runtime of a worker. Its methods are safe for
// concurrent use.
type Runtime struct {
	cfg    Config
	log    *slog.Logger
	client *client.Client

	// base is the parent of every call the runtime makes on its own
	// behalf (waiting for exits, cleaning up); Close cancels it.
	base       context.Context
	cancelBase context.CancelFunc
	running    sync.WaitGroup // instances until OnExit returned, and image removals

	prepares singleflight.Group

	mu        sync.Mutex
	images    map[string]client.Image // prepared, by artifact key
	keyLocks  map[string]*sync.Mutex  // serialize preparing and removing one image
	instances map[string]*instance
	closed    bool
}

// New connects to containerd on cfg.Socket and checks that it serves.
// When it does not, the error is in the Unavailable category: the worker
// then does not offer the container runtime.
func New(ctx context.Context, cfg Config) (_ *Runtime, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if _, err := os.Stat(cfg.Socket); err != nil {
		return nil, wdefs.Unavailablef("containerd does not answer on %s: %v", cfg.Socket, err)
	}
	c, err := client.New(cfg.Socket, client.WithDefaultNamespace(cfg.Namespace), client.WithTimeout(cfg.DialTimeout))
	if err != nil {
		return nil, wdefs.Unavailablef("containerd does not answer on %s: %v", cfg.Socket, err)
	}
	defer func() {
		if err != nil {
			_ = c.Close() // Don't leak the connection on error.
		}
	}()
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if ok, err := c.IsServing(pctx); err != nil || !ok {
		return nil, wdefs.Unavailablef("containerd does not answer on %s: %v", cfg.Socket, err)
	}
	if err := os.MkdirAll(cfg.FIFODir, 0o700); err != nil {
		return nil, fmt.Errorf("container runtime: fifo directory: %w", err)
	}
	if err := os.MkdirAll(cfg.FilesDir, 0o700); err != nil {
		return nil, fmt.Errorf("container runtime: files directory: %w", err)
	}
	base, cancelBase := context.WithCancel(namespaces.WithNamespace(context.WithoutCancel(ctx), cfg.Namespace))
	return &Runtime{
		cfg:        cfg,
		log:        cfg.Logger,
		client:     c,
		base:       base,
		cancelBase: cancelBase,
		images:     map[string]client.Image{},
		keyLocks:   map[string]*sync.Mutex{},
		instances:  map[string]*instance{},
	}, nil
}

// Name implements runtimeapi.Runtime.
func (r *Runtime) Name() string { return "container" }

// Serving reports whether containerd still answers.
func (r *Runtime) Serving(ctx context.Context) bool {
	ok, err := r.client.IsServing(r.ns(ctx))
	return err == nil && ok
}

// ns puts the runtime's namespace on ctx.
func (r *Runtime) ns(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, r.cfg.Namespace)
}

func artifactKey(a runtimeapi.Artifact) string {
	if a.Ref != "" {
		return "ref:" + a.Ref
	}
	return a.Digest
}

func (r *Runtime) keyLock(key string) *sync.Mutex {
	r.mu.Lock()
	defer r.mu.Unlock()
	l, ok := r.keyLocks[key]
	if !ok {
		l = &sync.Mutex{}
		r.keyLocks[key] = l
	}
	return l
}

// Prepare implements runtimeapi.Runtime: it imports the artifact's image
// archive, or pulls its reference, and unpacks it into the snapshotter.
// Its errors are *runtimeapi.StartError.
func (r *Runtime) Prepare(ctx context.Context, a runtimeapi.Artifact, _ int64) error {
	_, err := r.image(ctx, a)
	return err
}

func (r *Runtime) image(ctx context.Context, a runtimeapi.Artifact) (client.Image, error) {
	key := artifactKey(a)
	if key == "" {
		return nil, startError(true, runtimeapi.ReasonInvalid, "the artifact names neither an image archive nor an image reference")
	}
	r.mu.Lock()
	img, ok := r.images[key]
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return nil, startError(false, runtimeapi.ReasonStartError, "the container runtime is closed")
	}
	if ok {
		return img, nil
	}
	v, err, _ := r.prepares.Do(key, func() (any, error) {
		l := r.keyLock(key)
		l.Lock()
		defer l.Unlock()
		img, err := r.fetchImage(r.ns(ctx), a)
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		r.images[key] = img
		r.mu.Unlock()
		return img, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(client.Image), nil
}

// fetchImage imports or pulls a's image and unpacks it.
func (r *Runtime) fetchImage(ctx context.Context, a runtimeapi.Artifact) (client.Image, error) {
	if a.Path == "" {
		img, err := r.client.Pull(ctx, a.Ref, client.WithPullUnpack, client.WithPullSnapshotter(r.cfg.Snapshotter))
		if err != nil {
			permanent := errdefs.IsInvalidArgument(err)
			return nil, startError(permanent, runtimeapi.ReasonStartError, fmt.Sprintf("pulling image %s: %v", a.Ref, err))
		}
		r.log.Debug("image pulled", "ref", a.Ref, "digest", img.Target().Digest)
		return img, nil
	}
	h, ok := strings.CutPrefix(a.Digest, "sha256:")
	if _, err := hex.DecodeString(h); !ok || err != nil || len(h) != 64 {
		return nil, startError(true, runtimeapi.ReasonInvalid, fmt.Sprintf("image archive digest %q is not sha256:<64 hex>", a.Digest))
	}
	name := archiveImagePrefix + h
	if rec, err := r.client.ImageService().Get(ctx, name); err == nil {
		img := client.NewImage(r.client, rec)
		if done, err := img.IsUnpacked(ctx, r.cfg.Snapshotter); err == nil && done {
			return img, nil
		}
	}
	f, err := os.Open(a.Path)
	if err != nil {
		return nil, startError(false, runtimeapi.ReasonStartError, fmt.Sprintf("image archive %s: %v", a.Digest, err))
	}
	defer f.Close()
	imgs, err := r.client.Import(ctx, f, client.WithIndexName(name))
	if err != nil {
		if why := foreignPlatform(f); why != "" { // edge
			return nil, startError(true, runtimeapi.ReasonWrongArch, fmt.Sprintf("image archive %s %s", a.Digest, why))
		}
		return nil, startError(errdefs.IsInvalidArgument(err), runtimeapi.ReasonInvalid, fmt.Sprintf("importing image archive %s: %v", a.Digest, err))
	}
	if len(imgs) == 0 {
		return nil, startError(true, runtimeapi.ReasonInvalid, fmt.Sprintf("image archive %s holds no image", a.Digest))
	}
	img := client.NewImage(r.client, imgs[0])
	if err := img.Unpack(ctx, r.cfg.Snapshotter); err != nil {
		permanent := errdefs.IsNotFound(err) || errdefs.IsInvalidArgument(err)
		return nil, startError(permanent, runtimeapi.ReasonInvalid, fmt.Sprintf("unpacking image archive %s: %v", a.Digest, err))
	}
	r.log.Debug("image archive imported", "digest", a.Digest, "image", name)
	return img, nil
}

// foreignPlatform says why the image archive in f has no image for this
// node's platform ("holds linux/arm64 only; this node is linux/amd64"),
// or "" when it has one or says nothing of its platforms: containerd's
// import filters the images of other platforms out and then finds none,
// which is this node's failure, not the archive's (edge: the control plane
// places the instance on another node).
func foreignPlatform(f *os.File) string {
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	info, err := ociarchive.InspectAt(f, st.Size())
	if err != nil || len(info.Platforms) == 0 {
		return ""
	}
	here := runtime.GOOS + "/" + runtime.GOARCH
	for _, p := range info.Platforms {
		if p == here {
			return ""
		}
	}
	return fmt.Sprintf("holds %s only; this node is %s", strings.Join(info.Platforms, ", "), here)
}

// Release implements runtimeapi.Runtime: it forgets the prepared image and
// removes it from containerd's image store in the background (containers
// still running from it keep their snapshots).
func (r *Runtime) Release(a runtimeapi.Artifact) {
	key := artifactKey(a)
	r.mu.Lock()
	img, ok := r.images[key]
	delete(r.images, key)
	if !ok || r.closed {
		r.mu.Unlock()
		return
	}
	r.running.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.running.Done()
		l := r.keyLock(key)
		l.Lock()
		defer l.Unlock()
		r.mu.Lock()
		_, again := r.images[key]
		r.mu.Unlock()
		if again {
			return // Prepared again meanwhile: still wanted.
		}
		ctx, cancel := context.WithTimeout(r.base, cleanupTimeout)
		defer cancel()
		if err := r.client.ImageService().Delete(ctx, img.Name()); err != nil && !errdefs.IsNotFound(err) {
			r.log.Warn("removing image", "image", img.Name(), "err", err)
		}
	}()
}

// Close stops every instance at once (SIGKILL), waits for them to be
// removed (or for ctx), and closes the connection. It is safe to call more
// than once.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	all := make([]*instance, 0, len(r.instances))
	for _, in := range r.instances {
		all = append(all, in)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, in := range all {
		wg.Go(func() { in.Stop(ctx, 0) })
	}
	wg.Wait()
	exited := make(chan struct{})
	go func() {
		r.running.Wait()
		close(exited)
	}()
	var err error
	select {
	case <-exited:
	case <-ctx.Done():
		err = fmt.Errorf("container runtime close: containers still being removed: %w", context.Cause(ctx))
	}
	r.cancelBase()
	return errors.Join(err, r.client.Close())
}

// startError is a StartError for an instance that never ran.
func startError(permanent bool, reason, msg string) *runtimeapi.StartError {
	return &runtimeapi.StartError{Exit: runtimeapi.Exit{
		Code:      NotStartedExitCode,
		Reason:    reason,
		Message:   msg,
		Permanent: permanent,
		At:        time.Now(),
	}}
}

func checkSpec(spec runtimeapi.InstanceSpec) error {
	if !identifier.MatchString(spec.ID) {
		return startError(true, runtimeapi.ReasonStartError, fmt.Sprintf("instance ID %q is not a valid container ID", spec.ID))
	}
	for _, a := range spec.Args {
		if strings.IndexByte(a, 0) >= 0 {
			return startError(true, runtimeapi.ReasonStartError, fmt.Sprintf("argument %q contains a NUL byte", a))
		}
	}
	for _, kv := range spec.Env {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" || strings.IndexByte(kv, 0) >= 0 {
			return startError(true, runtimeapi.ReasonStartError, fmt.Sprintf("environment entry %q is not KEY=VALUE", kv))
		}
	}
	if spec.MemoryBytes < 0 || spec.MilliCPU < 0 {
		return startError(true, runtimeapi.ReasonStartError, "negative memory or CPU limit")
	}
	if err := checkFiles(spec.Files); err != nil {
		return startError(true, runtimeapi.ReasonStartError, err.Error())
	}
	return nil
}
