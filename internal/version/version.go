// Package version holds the build's version string, set by the Makefile
// through -ldflags.
package version

// Version is overwritten at link time (-X .../internal/version.Version=...).
var Version = "dev"
