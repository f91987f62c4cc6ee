package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	extender "github.com/corepin/corepin/scheduler-extender"
)

// runSimulate implements `corepinctl simulate --scenario FILE`: exit 0 when
// the scenario ran (whatever was unschedulable), 2 when it is malformed.
func runSimulate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	scenario := fs.String("scenario", "", "scenario file (YAML), - for standard input")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *scenario == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "corepinctl simulate: --scenario FILE is required")
		return 2
	}
	var data []byte
	var err error
	if *scenario == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(*scenario)
	}
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl simulate: %v\n", err)
		return 2
	}
	sc, err := extender.ParseScenario(data)
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl simulate: %s: %v\n", *scenario, err)
		return 2
	}
	if err := extender.Simulate(sc, stdout); err != nil {
		fmt.Fprintf(stderr, "corepinctl simulate: %v\n", err)
		if errors.Is(err, extender.ErrMalformedScenario) {
			return 2
		}
		return 1
	}
	return 0
}
