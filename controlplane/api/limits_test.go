package api

import (
	"testing"

	"github.com/wasmorch/wasmorch/internal/cliclient"
)

// TestTheCLIKnowsTheLargestMessage: the CLI refuses a request over the
// API's message limit before sending it, with its size and what to do; a
// limit it does not share would let gRPC's bare ResourceExhausted through.
func TestTheCLIKnowsTheLargestMessage(t *testing.T) {
	if cliclient.MaxRequestBytes != MaxMessageBytes {
		t.Fatalf("cliclient.MaxRequestBytes = %d, api.MaxMessageBytes = %d", cliclient.MaxRequestBytes, MaxMessageBytes)
	}
}
