package ctrrt

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Configs and secrets mounted as files (InstanceSpec.Files, by guest path
// /config/<name>/<key> and /secrets/<name>/<key>) are written to a
// directory of the instance's own, Config.FilesDir/<instance id>, and each
// top-level directory of it (config, secrets) is bind-mounted read-only at
// the same path in the container. The layout is:
//
//	FilesDir                 0700, the worker's: no other host user enters
//	  <instance id>/         0755
//	    config/<name>/<key>  directories 0755, files 0444
//	    secrets/<name>/<key>
//
// The files are world-readable inside the mount because the runtime does
// not know which user the image runs as (a USER line may name a user of
// the image's /etc/passwd); the 0700 parent is what keeps other users of
// the host out. The directory lives as long as the container: it is
// written before the container is created, left alone when a restarted
// worker adopts the container, and removed with the container.

// instanceFilesDir is where instance id's files are kept.
func (r *Runtime) instanceFilesDir(id string) string {
	return filepath.Join(r.cfg.FilesDir, id)
}

// checkFiles refuses guest paths that are not absolute, clean and at least
// two levels deep (a mount, then a file in it), and mounts over the
// container's own system directories.
func checkFiles(files map[string][]byte) error {
	for p := range files {
		if !path.IsAbs(p) || path.Clean(p) != p || strings.IndexByte(p, 0) >= 0 {
			return fmt.Errorf("file path %q is not a clean absolute path", p)
		}
		top, rest, _ := strings.Cut(p[1:], "/")
		if rest == "" {
			return fmt.Errorf("file path %q is not inside a directory: files are mounted as /<dir>/<file>", p)
		}
		if slices.Contains([]string{"bin", "dev", "etc", "lib", "lib64", "proc", "sbin", "sys", "usr", "tmp", "run", "var"}, top) {
			return fmt.Errorf("file path %q would hide the container's /%s", p, top)
		}
	}
	return nil
}

// writeFiles writes instance id's files afresh and returns the read-only
// bind mounts that show them to the container. Nothing is left behind on
// error. The values are never logged or put in an error.
func (r *Runtime) writeFiles(id string, files map[string][]byte) (_ []specs.Mount, err error) {
	dir := r.instanceFilesDir(id)
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("removing the previous files of %s: %w", id, err)
	}
	if err := os.MkdirAll(r.cfg.FilesDir, 0o700); err != nil {
		return nil, fmt.Errorf("files directory: %w", err)
	}
	// MkdirAll leaves an existing directory's mode alone: the parent may
	// have been made by someone else, so it is made private here.
	if err := os.Chmod(r.cfg.FilesDir, 0o700); err != nil {
		return nil, fmt.Errorf("files directory: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.RemoveAll(dir) // Don't leak the files on error.
		}
	}()
	tops := map[string]bool{}
	for p, data := range files {
		host := filepath.Join(dir, filepath.FromSlash(p))
		if err := mkdirs(dir, filepath.Dir(host)); err != nil {
			return nil, err
		}
		if err := writeReadOnly(host, data); err != nil {
			return nil, fmt.Errorf("writing the file %s of %s: %w", p, id, err)
		}
		top, _, _ := strings.Cut(p[1:], "/")
		tops[top] = true
	}
	var mounts []specs.Mount
	for _, top := range slices.Sorted(maps.Keys(tops)) {
		mounts = append(mounts, specs.Mount{
			Destination: "/" + top,
			Type:        "bind",
			Source:      filepath.Join(dir, top),
			Options:     []string{"rbind", "ro", "nosuid", "nodev", "noexec"},
		})
	}
	return mounts, nil
}

// mkdirs makes dir and every directory from it down to sub with mode 0755
// (whatever the umask).
func mkdirs(dir, sub string) error {
	rel, err := filepath.Rel(dir, sub)
	if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return fmt.Errorf("file directory %s is outside %s", sub, dir)
	}
	cur := dir
	for _, part := range append([]string{"."}, strings.Split(rel, string(filepath.Separator))...) {
		cur = filepath.Join(cur, part)
		if err := os.Mkdir(cur, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
		if err := os.Chmod(cur, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// writeReadOnly writes data to a new file at path with mode 0444.
func writeReadOnly(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(path, 0o444) // the umask may have taken bits away
	}
	return err
}

// removeFiles removes instance id's files, if it has any.
func (r *Runtime) removeFiles(id string) {
	if err := os.RemoveAll(r.instanceFilesDir(id)); err != nil {
		r.log.Warn("removing the config and secret files of an instance", "instance", id, "err", err)
	}
}

// removeUnwantedFiles removes the file directories of instances that are
// neither in keep nor this process's own: those a worker that died left
// behind, perhaps before it created their containers.
func (r *Runtime) removeUnwantedFiles(keep map[string]bool) error {
	entries, err := os.ReadDir(r.cfg.FilesDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("listing the files directory: %w", err)
	}
	for _, e := range entries {
		id := e.Name()
		r.mu.Lock()
		_, ours := r.instances[id]
		r.mu.Unlock()
		if keep[id] || ours {
			continue
		}
		r.removeFiles(id)
	}
	return nil
}
