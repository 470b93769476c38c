package main

import (
	"context"
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/wasmorch/wasmorch/ctrrt"
	"github.com/wasmorch/wasmorch/internal/agentcmd"
	"github.com/wasmorch/wasmorch/worker/runtimeapi"
)

// newAgentCommand is `wasmorch agent`: a worker alone, joined to a control
// plane. It is internal/agentcmd's command, which the slim wasmorch-agent
// binary runs as its root: the same flags, the same join.
func newAgentCommand(stopSignals func()) *cobra.Command {
	return agentcmd.NewCommand("agent", stopSignals, ctrrt.Offer)
}

// What up and server share with the agent command.
const (
	defaultContainerdSocket = agentcmd.DefaultContainerdSocket
	containerdHelp          = agentcmd.ContainerdHelp
	reservedMemoryHelp      = agentcmd.ReservedMemoryHelp
)

// withContainers offers up's worker containers as the agent's.
func withContainers(ctx context.Context, logger *slog.Logger, socket, dataDir string, rts []runtimeapi.Runtime) ([]runtimeapi.Runtime, func() error) {
	return agentcmd.WithContainers(ctx, logger, ctrrt.Offer, socket, dataDir, rts)
}

// diskFlags are the worker's disk bounds, the agent's and up's.
type diskFlags = agentcmd.DiskFlags

var (
	hostname            = agentcmd.Hostname
	ranUntil            = agentcmd.RanUntil
	startError          = agentcmd.StartError
	closeRuntime        = agentcmd.CloseRuntime
	absPath             = agentcmd.AbsPath
	isTerminal          = agentcmd.IsTerminal
	newLogger           = agentcmd.NewLogger
	parseLabels         = agentcmd.ParseLabels
	parseReservedMemory = agentcmd.ParseReservedMemory
	parseCapacity       = agentcmd.ParseCapacity
	runtimeNames        = agentcmd.RuntimeNames
)
