// Package volumes names the volume records an instance mounts (state,
// issue 14): a shared named volume is its own name; a per-instance one
// (VolumeMount.per_instance) is one record per replica slot of its
// workload, NAME-WORKLOAD-ORDINAL, as Kubernetes names the claims of a
// StatefulSet's volumeClaimTemplates. The controller, the scheduler, the
// API and the worker all name them through it.
package volumes

import (
	"strconv"

	v1 "github.com/wasmorch/wasmorch/proto/wasmorch/v1"
)

// PerInstanceName is the volume of replica slot ordinal of workload for
// its per-instance mount name.
func PerInstanceName(name, workload string, ordinal int32) string {
	return name + "-" + workload + "-" + strconv.Itoa(int(ordinal))
}

// RecordName is the name of the volume record inst mounts for vm.
func RecordName(vm *v1.VolumeMount, inst *v1.Instance) string {
	if vm.GetPerInstance() {
		return PerInstanceName(vm.GetName(), inst.GetWorkload(), inst.GetOrdinal())
	}
	return vm.GetName()
}

// PerInstance reports whether spec mounts a volume per instance.
func PerInstance(spec *v1.WorkloadSpec) bool {
	for _, vm := range spec.GetVolumes() {
		if vm.GetPerInstance() {
			return true
		}
	}
	return false
}
