package controlplane

// SetRouteCheckedHook makes ApplyWorkload call f between checking the
// routes and writing the workload, so that a test can line two deploys up
// in that window.
func SetRouteCheckedHook(s *Server, f func()) { s.api.SetRouteChecked(f) }
