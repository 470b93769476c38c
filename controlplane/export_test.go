package controlplane

// SetRouteCheckedHook makes ApplyWorkload call f between checking the
// routes and writing the workload, so that a test can line two deploys up
// in that window.
func SetRouteCheckedHook(s *Server, f func()) { s.api.SetRouteChecked(f) }

// SetUsersCheckedHook makes the removals of volumes, configs and secrets
// call f between checking their users and removing them.
func SetUsersCheckedHook(s *Server, f func(kind, name string)) { s.api.SetUsersChecked(f) }

// UploadWaiters is how many uploads of digest wait for the one the member
// is receiving.
func UploadWaiters(s *Server, digest string) int { return s.api.UploadWaiters(digest) }
