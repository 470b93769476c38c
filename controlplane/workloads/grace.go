package workloads

import (
	"time"

	"github.com/wasmorch/wasmorch/internal/errdefs"
)

// LostAfterLabel is the node label that sets how long the control plane
// waits without a heartbeat from the node before it declares it lost and
// replaces its instances: a Go duration such as 30s, 5m or 1h, from 1s to
// MaxLostAfter, never less than the cluster's node grace (2 s by default).
// Nodes on flaky links (an IoT fleet) get it from their join token or an
// admin, so that they are not churned, while the others keep the default.
const LostAfterLabel = "wasmorch.io/lost-after"

// MaxLostAfter bounds LostAfterLabel.
const MaxLostAfter = 24 * time.Hour

// ParseLostAfter reads a LostAfterLabel value.
func ParseLostAfter(v string) (time.Duration, error) {
	d, err := time.ParseDuration(v)
	if err != nil || d < time.Second || d > MaxLostAfter {
		return 0, errdefs.Invalidf("label %s=%s is not a duration from 1s to 24h, such as 30s, 5m or 1h", LostAfterLabel, v)
	}
	return d, nil
}

// NodeGrace is how long a node with labels may go without a heartbeat
// before it is lost: its LostAfterLabel, or def; never less than def.
func NodeGrace(labels map[string]string, def time.Duration) time.Duration {
	v, ok := labels[LostAfterLabel]
	if !ok {
		return def
	}
	d, err := ParseLostAfter(v)
	if err != nil {
		return def // refused where labels are set; a record from before cannot shorten the grace
	}
	return max(d, def)
}
