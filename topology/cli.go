package topology

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/corepin/corepin/api"
)

// RunTopologyCommand implements `corepinctl topology [--root DIR]
// [--proc-root DIR] [--reserved LIST]`: it prints the discovered topology
// as indented corepin.io/topology JSON.
func RunTopologyCommand(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("topology", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "/", "root holding sys/ and proc/ to read")
	procRoot := fs.String("proc-root", "", "proc root for IO queues (default ROOT/proc)")
	reserved := fs.String("reserved", "", "reserved CPUs, a Linux CPU list")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	res, err := api.ParseCPUList(*reserved)
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl topology: --reserved %q: %v\n", *reserved, err)
		return 2
	}
	topo, err := Discover(Options{Root: *root, ProcRoot: *procRoot, Reserved: res})
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl topology: %v\n", err)
		return 1
	}
	out, err := json.MarshalIndent(topo, "", "  ")
	if err != nil {
		fmt.Fprintf(stderr, "corepinctl topology: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, string(out))
	return 0
}
