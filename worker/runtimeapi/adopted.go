package runtimeapi

// Readopted is an Instance of an Adopter that may have been adopted from a
// previous worker process rather than started. The worker hands the
// runtime the instance's restart count with each start
// (InstanceSpec.Restarts); the runtime keeps it with the instance, so that
// a worker that restarts carries on counting rather than start from zero.
type Readopted interface {
	Instance
	// Readopted reports whether the instance was adopted, and its restart
	// count as the previous worker process handed it.
	Readopted() (restarts int32, ok bool)
}
