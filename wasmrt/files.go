package wasmrt

import (
	"path"
	"strings"
	"testing/fstest"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental/sysfs"
)

// filesConfig preopens the instance's files (configs and secrets mounted
// as files, by absolute guest path) as read-only directories: one mount
// per top-level directory (/config, /secrets), each an in-memory file
// system, so that nothing is written to the node's disk. sysfs.ReadFS
// refuses opening for writing (EROFS), rather than failing at the first
// write as a bare fs.FS does.
func filesConfig(files map[string][]byte) wazero.FSConfig {
	mounts := map[string]fstest.MapFS{}
	for p, data := range files {
		p = strings.TrimPrefix(path.Clean("/"+p), "/")
		top, rest, ok := strings.Cut(p, "/")
		if !ok || rest == "" {
			continue // the control plane only sends /<dir>/<name>/<key>
		}
		if mounts[top] == nil {
			mounts[top] = fstest.MapFS{}
		}
		mounts[top][rest] = &fstest.MapFile{Data: data, Mode: 0o444}
	}
	cfg := wazero.NewFSConfig()
	for top, fsys := range mounts {
		cfg = cfg.(sysfs.FSConfig).WithSysFSMount(&sysfs.ReadFS{FS: &sysfs.AdaptFS{FS: fsys}}, "/"+top)
	}
	return cfg
}
