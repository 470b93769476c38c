//go:build race

package wasmrt

const raceEnabled = true
