package main

import (
	"io"

	"github.com/corepin/corepin/topology"
)

func runTopology(args []string, stdout, stderr io.Writer) int {
	return topology.RunTopologyCommand(args, stdout, stderr)
}
