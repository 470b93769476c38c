package main

import "github.com/wasmorch/wasmorch/internal/clirun"

// Settings come, strongest first, from a flag, a WASMORCH_<FLAG> variable,
// a key named like the flag in the config file, and the flag's default:
// internal/clirun's rules, which wasmorch-agent shares.
const (
	envPrefix  = clirun.EnvPrefix
	configFlag = clirun.ConfigFlag
)

var (
	applySettings   = clirun.ApplySettings
	commandLineOnly = clirun.CommandLineOnly
	configPath      = clirun.ConfigPath
)
