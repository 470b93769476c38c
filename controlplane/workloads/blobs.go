package workloads

import (
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/wasmorch/wasmorch/controlplane/blobs"
	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// Blobs are the digests of the blobs spec runs.
func Blobs(spec *v1.WorkloadSpec) []string {
	var out []string
	for _, d := range []string{spec.GetModuleDigest(), spec.GetFallbackArchiveDigest()} {
		if d != "" {
			out = append(out, d)
		}
	}
	return out
}

// BlobsPresent are comparisons that hold while every blob spec runs is
// stored: a workload write includes them, so that it fails rather than
// reference a blob the collector deleted after the write checked it.
func BlobsPresent(spec *v1.WorkloadSpec) ([]clientv3.Cmp, error) {
	var cmps []clientv3.Cmp
	for _, d := range Blobs(spec) {
		cmp, err := blobs.Present(d)
		if err != nil {
			return nil, err
		}
		cmps = append(cmps, cmp)
	}
	return cmps, nil
}
