// Command corepinctl is the operator's CLI for corepin.
//
//	corepinctl topology [--root DIR] [--proc-root DIR] [--reserved LIST]
//	corepinctl simulate --scenario FILE
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
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "corepinctl: unknown command %q\n%s", args[0], usage)
	return 2
}
