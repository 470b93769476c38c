package worker

import (
	"context"
	"strings"
	"testing"

	pb "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// A cold start runs from the workload's spec, which names configs and
// secrets, as files or environment, but never holds their values: a
// function that has some is refused, so that its request waits for a
// replica rather than run without them.
func TestColdStartRefusedForAFunctionWithFiles(t *testing.T) {
	w := &Worker{cfg: Config{NodeName: "n1"}}
	for _, spec := range []*pb.WorkloadSpec{
		{ModuleDigest: "sha256:aa", Http: &pb.HttpTrigger{Route: "/f"}, ConfigFiles: []string{"app"}},
		{ModuleDigest: "sha256:aa", Http: &pb.HttpTrigger{Route: "/f"}, SecretFiles: []string{"db"}},
		{ModuleDigest: "sha256:aa", Http: &pb.HttpTrigger{Route: "/f"}, Configs: []string{"app"}},
		{ModuleDigest: "sha256:aa", Http: &pb.HttpTrigger{Route: "/f"}, Secrets: []string{"db"}},
	} {
		fn, err := w.prepareCold(context.Background(), "f", spec)
		if err == nil || !strings.Contains(err.Error(), "config or secret files") {
			if fn != nil {
				fn.Close()
			}
			t.Errorf("prepareCold(%v) = %v, want a refusal naming the files", spec, err)
		}
	}
}
