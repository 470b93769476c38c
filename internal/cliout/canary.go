package cliout

import (
	"fmt"
	"time"

	"github.com/wasmorch/wasmorch/internal/canary"
	wasmorchv1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// canarySetting is how describe shows a function's canary setting: ""
// without one.
func canarySetting(spec *wasmorchv1.WorkloadSpec) string {
	if spec.GetCanary() == "" {
		return ""
	}
	how := "promoted by 'wasmorch rollout promote'"
	if ms := spec.GetCanaryDurationMs(); ms > 0 {
		how = fmt.Sprintf("promoted once ready for %s", time.Duration(ms)*time.Millisecond)
	}
	return fmt.Sprintf("%s of the traffic for a new generation, %s", spec.GetCanary(), how)
}

// canaryPhase says what a workload's canary is doing while its generation
// waits for promotion beside instances of an older one; "" otherwise.
func canaryPhase(w *wasmorchv1.Workload, insts []*wasmorchv1.InstanceView) string {
	if !canary.Unpromoted(w) {
		return ""
	}
	old, ready := 0, 0
	for _, v := range insts {
		state := EffectiveState(v)
		if v.GetInstance().GetGeneration() != w.GetGeneration() {
			if state != wasmorchv1.InstanceState_INSTANCE_STATE_STOPPED && state != wasmorchv1.InstanceState_INSTANCE_STATE_LOST {
				old++
			}
		} else if state == wasmorchv1.InstanceState_INSTANCE_STATE_RUNNING && !v.GetStatus().GetUnhealthy() {
			ready++
		}
	}
	if old == 0 {
		return ""
	}
	pct := canary.Percent(w)
	n := canary.Replicas(pct, int(w.GetSpec().GetReplicas()))
	s := fmt.Sprintf("canary of generation %d: %d/%d ready, %d%% of the traffic; %d of older generations serve the rest; ",
		w.GetGeneration(), min(ready, n), n, pct, old)
	if ms := w.GetSpec().GetCanaryDurationMs(); ms > 0 {
		return s + fmt.Sprintf("promoted once ready for %s", time.Duration(ms)*time.Millisecond)
	}
	return s + fmt.Sprintf("waiting for promotion ('wasmorch rollout promote %s')", w.GetName())
}
