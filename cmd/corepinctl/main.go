// Command corepinctl is the operator's CLI for corepin.
//
//	corepinctl topology [--root DIR] [--proc-root DIR] [--reserved LIST]
//	corepinctl simulate --scenario FILE
//	corepinctl nodes [-o text|json]
//	corepinctl node NAME [-o text|json]
//	corepinctl explain [-n NAMESPACE] [NAMESPACE/]POD [-o text|json]
//	corepinctl place --placer URL -f FILE [--certificate-authority CA] [--client-certificate CERT --client-key KEY]
//
// The cluster commands take --kubeconfig and --context, resolved as kubectl
// resolves them.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `usage: corepinctl COMMAND [flags]

commands:
  topology   print this machine's CPU topology as the corepin.io/topology JSON
  simulate   run a scenario through the extender's filter -> prioritize -> bind path
  nodes      one line per node: CPUs, reserved, exclusive limit and use, shared pool, warnings
  node NAME  a node's CPUs by socket, NUMA node and core: reserved, exclusive (and whose), shared, stacked
  explain POD
             why a pod has its CPUs, or why it is pending (the engine's reasons, node by node);
             -o json prints the same as one document
  place      send a CPUReservation (-f FILE) to corepin-placer (--placer URL) and print its answer;
             an https placer: --certificate-authority, --client-certificate and --client-key

cluster commands take --kubeconfig FILE and --context NAME (as kubectl), and
read the extender's configuration from ConfigMap corepin-system/corepin-scheduler-config
(--config-map, or --extender-config FILE)
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "simulate":
		return runSimulate(args[1:], stdout, stderr)
	case "topology":
		return runTopology(args[1:], stdout, stderr)
	case "nodes":
		return runNodes(args[1:], stdout, stderr)
	case "node":
		return runNode(args[1:], stdout, stderr)
	case "explain":
		return runExplain(args[1:], stdout, stderr)
	case "place":
		return runPlace(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "corepinctl: unknown command %q\n%s", args[0], usage)
	return 2
}
