// Command cpusetwriter is another NRI plugin that sets the cpuset of every
// container it sees, as a second CPU manager on a node would. It exists
// for the integration test of corepin-nri's report of such a plugin:
// containerd refuses every container both adjust.
//
//	cpusetwriter --nri-socket /run/nri/nri.sock --plugin-index 20 --cpus 0
package main

import (
	"context"
	"flag"
	"log"
	"os/signal"
	"syscall"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
)

type writer struct{ cpus string }

func (w writer) CreateContainer(_ context.Context, sb *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	log.Printf("setting CPUSetCPUs %s on %s/%s container %s", w.cpus, sb.GetNamespace(), sb.GetName(), c.GetName())
	adjust := &api.ContainerAdjustment{}
	adjust.SetLinuxCPUSetCPUs(w.cpus)
	return adjust, nil, nil
}

func main() {
	socket := flag.String("nri-socket", "/var/run/nri/nri.sock", "containerd's NRI socket")
	idx := flag.String("plugin-index", "20", "NRI plugin index")
	name := flag.String("plugin-name", "cpuset-writer", "NRI plugin name")
	cpus := flag.String("cpus", "0", "the cpuset every container gets")
	flag.Parse()
	s, err := stub.New(writer{cpus: *cpus}, stub.WithSocketPath(*socket), stub.WithPluginIdx(*idx), stub.WithPluginName(*name))
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Printf("registering as %s-%s", *idx, *name)
	if err := s.Run(ctx); err != nil && ctx.Err() == nil {
		log.Fatal(err)
	}
}
