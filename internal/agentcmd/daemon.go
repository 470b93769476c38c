package agentcmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/wasmorch/wasmorch/controlplane/auth"
	"github.com/wasmorch/wasmorch/internal/clierr"
	"github.com/wasmorch/wasmorch/internal/diskspace"
	"github.com/wasmorch/wasmorch/internal/errdefs"
	"github.com/wasmorch/wasmorch/wasmrt"
)

// DefaultServer is the control-plane API address clients and agents use
// unless told otherwise.
const DefaultServer = "127.0.0.1:7070"

// RuntimeCloseTimeout bounds how long a runtime may take to stop its
// instances once the worker has returned.
const RuntimeCloseTimeout = 10 * time.Second

// IO is what a long-running command prints to and how it hands signals
// back once it is shutting down.
type IO struct {
	Out         io.Writer
	Terminal    bool // Out is a terminal, not a log
	Logger      *slog.Logger
	StopSignals func()
}

// OnShutdown lets a second signal kill the process once ctx is done, and
// says so.
func (d IO) OnShutdown(ctx context.Context) (release func()) {
	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			d.StopSignals()
			d.Logger.Info("shutting down; press Ctrl-C again to stop at once")
		case <-done:
		}
	}()
	return func() { close(done) }
}

// Hostname is the default node or member name: the host's, in lower case.
func Hostname() string {
	if h, err := os.Hostname(); err == nil && h != "" {
		return strings.ToLower(h)
	}
	return "wasmorch"
}

// RanUntil judges how a component's Start returned: stopping because ctx
// ended is a clean shutdown; stopping on its own is an error.
func RanUntil(ctx context.Context, what string, err error) error {
	switch {
	case ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)):
		return nil
	case err == nil:
		return &clierr.Error{What: what + " stopped on its own", Hint: "see the log above"}
	}
	return &clierr.Error{What: what + " failed: " + clierr.OneLine(err.Error()), Hint: "see the log above", Cause: err}
}

// StartError says that what could not start, and what to do (a full disk
// has its own hint).
func StartError(what string, err error, hint string) error {
	if low := (*diskspace.LowError)(nil); errors.As(err, &low) {
		hint = "free space on that disk, or give --data-dir a directory on another"
	}
	return &clierr.Error{What: "cannot start " + what + ": " + clierr.OneLine(err.Error()), Hint: hint, Cause: err}
}

// JoinError gives a refused join (a token not valid, expired, revoked, or
// for another cluster) the hint of what to do about it.
func JoinError(err error) error {
	if err == nil || !(errors.Is(err, errdefs.ErrUnauthenticated) || errors.Is(err, errdefs.ErrPermissionDenied) || errors.Is(err, auth.ErrPinMismatch)) {
		return err
	}
	what := strings.TrimPrefix(clierr.OneLine(err.Error()), "the worker failed: ")
	what, _, _ = strings.Cut(what, "; see the log above")
	return &clierr.Error{What: "the agent cannot join the cluster: " + what, Hint: "pass a valid --token (made on a server with 'wasmorch token create'), and check --server", Cause: err}
}

// CloseRuntime closes a Wasm runtime within RuntimeCloseTimeout, even
// once ctx is done.
func CloseRuntime(ctx context.Context, rt *wasmrt.Runtime) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), RuntimeCloseTimeout)
	defer cancel()
	return rt.Close(ctx)
}

// AbsPath is p made absolute, or p when it cannot be.
func AbsPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// IsTerminal says whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// NewLogger logs as text to w at the named level.
func NewLogger(w io.Writer, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, clierr.Errorf("use --log-level debug, info, warn or error", "invalid --log-level %q", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl})), nil
}

// ParseLabels parses k=v items, each of which may itself hold several
// comma-separated pairs (as a config file or variable may give them).
func ParseLabels(items []string) (map[string]string, error) {
	labels := map[string]string{}
	for _, item := range items {
		for _, pair := range strings.Split(item, ",") {
			pair = strings.TrimSpace(pair)
			if pair == "" {
				continue
			}
			k, v, ok := strings.Cut(pair, "=")
			if !ok || strings.TrimSpace(k) == "" {
				return nil, clierr.Errorf("use --labels key=value[,key=value...]", "invalid label %q", pair)
			}
			labels[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return labels, nil
}

// ReservedMemoryHelp describes --reserved-memory.
const ReservedMemoryHelp = "memory kept for the system and wasmorch itself, e.g. 2Gi; instances and function requests share the rest (the node's allocatable memory). Default: a tenth of the node's memory, at least 256Mi; 0: none"

// ParseReservedMemory reads --reserved-memory into
// worker.Config.ReservedMemoryBytes: "" is the default (0), "0" none (-1).
func ParseReservedMemory(s string) (int64, error) {
	switch strings.TrimSpace(s) {
	case "":
		return 0, nil
	case "0":
		return -1, nil
	}
	n, err := ParseCapacity(s)
	if err != nil {
		return 0, clierr.Errorf("use --reserved-memory like 2Gi, 512Mi, a number of bytes, or 0 for none", "invalid --reserved-memory: %v", err)
	}
	return n, nil
}

// ParseCapacity parses a size: "64Gi", "512Mi", "1.5Ti", "1G" or bytes.
func ParseCapacity(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{
		{"Ti", 1 << 40}, {"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10},
		{"T", 1e12}, {"G", 1e9}, {"M", 1e6}, {"k", 1e3}, {"K", 1e3},
	}
	num, mult := strings.TrimSuffix(strings.TrimSpace(s), "B"), 1.0
	for _, u := range units {
		if n, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = n, u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 || math.IsInf(f, 0) {
		return 0, fmt.Errorf("%q is not a positive size", s)
	}
	bytes := f * mult
	if bytes > math.MaxInt64/2 || bytes != math.Trunc(bytes) {
		return 0, fmt.Errorf("%q is not a whole number of bytes that fits", s)
	}
	return int64(bytes), nil
}
