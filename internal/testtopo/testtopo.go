// Package testtopo holds the named node topologies the tests of every
// package share, as data (topologies/NAME.json, described in
// topologies/README.md), so that each test reads the layout of a real
// machine rather than a generator's idea of one.
package testtopo

import (
	"embed"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/corepin/corepin/api"
)

//go:embed topologies/*.json
var files embed.FS

// Load returns the named topology, parsed and validated as the extender
// parses a node's corepin.io/topology annotation.
func Load(name string) (api.Topology, error) {
	data, err := files.ReadFile(path.Join("topologies", name+".json"))
	if err != nil {
		return api.Topology{}, fmt.Errorf("test topology %q: %w (have %s)", name, err, strings.Join(Names(), ", "))
	}
	topo, err := api.ParseTopology(string(data))
	if err != nil {
		return api.Topology{}, fmt.Errorf("test topology %q: %w", name, err)
	}
	return topo, nil
}

// MustLoad is Load for tests and benchmarks, where a missing or invalid
// file is the test's own bug.
func MustLoad(name string) api.Topology {
	topo, err := Load(name)
	if err != nil {
		panic(err)
	}
	return topo
}

// Names lists the named topologies, sorted.
func Names() []string {
	entries, _ := files.ReadDir("topologies")
	var names []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}
