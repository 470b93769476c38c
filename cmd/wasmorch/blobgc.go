package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/controlplane"
	"github.com/wasmorch/wasmorch/internal/cliclient"
)

// addBlobSettings adds the settings of uploaded blobs to up and server:
// the largest upload, and the garbage collector's.
func addBlobSettings(cmd *cobra.Command, cp *controlplane.Config) {
	cmd.Flags().Var(sizeValue{&cp.MaxUploadBytes}, "max-upload-size", "the largest module or image archive the server takes (an upload over it is refused; at most 1Gi: every blob is kept whole in etcd on every member)")
	cmd.Flags().DurationVar(&cp.BlobGCInterval, "blob-gc-interval", controlplane.DefaultBlobGCInterval, "how often the leader deletes uploaded modules and image archives that no workload, instance or kept revision references (0: never)")
	cmd.Flags().DurationVar(&cp.BlobGCGrace, "blob-gc-grace", controlplane.DefaultBlobGCGrace, "how long a blob must have stayed unreferenced before it is deleted: the time allowed between an upload and the apply that uses it")
}

// sizeValue is a flag holding a size in bytes, given as 128Mi, 1Gi or
// plain bytes.
type sizeValue struct{ p *int64 }

func (v sizeValue) Type() string { return "size" }

func (v sizeValue) String() string {
	if v.p == nil {
		return "0"
	}
	for _, u := range []struct {
		suffix string
		n      int64
	}{{"Gi", 1 << 30}, {"Mi", 1 << 20}, {"Ki", 1 << 10}} {
		if *v.p != 0 && *v.p%u.n == 0 {
			return fmt.Sprintf("%d%s", *v.p/u.n, u.suffix)
		}
	}
	return fmt.Sprint(*v.p)
}

func (v sizeValue) Set(s string) error {
	n, err := cliclient.ParseMemory(s)
	if err != nil {
		return fmt.Errorf("%q is not a size such as 128Mi or 1Gi", s)
	}
	*v.p = n
	return nil
}

// addDebugFlag adds --debug-addr (Go's profiler) to up and server.
func addDebugFlag(cmd *cobra.Command, cp *controlplane.Config) {
	cmd.Flags().StringVar(&cp.DebugAddr, "debug-addr", "", "serve Go's profiler (/debug/pprof/) at HOST:PORT, for finding where a member spends its time; no authentication: keep it on loopback (default: off)")
}
