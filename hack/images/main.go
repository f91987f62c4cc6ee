// Command images writes corepin's container images as image tarballs from
// the project's static binaries (see `make images`): no Docker needed.
//
//	go run ./hack/images --bin bin --out bin/images [--kube-scheduler PATH]
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/corepin/corepin/internal/ociimage"
)

// Tag is the tag of locally built images (deploy/ refers to it).
const Tag = "dev"

func main() {
	bin := flag.String("bin", "bin", "directory holding the static binaries (make build)")
	out := flag.String("out", "bin/images", "where to write the tarballs")
	scheduler := flag.String("kube-scheduler", "", "a static kube-scheduler binary: also write registry.k8s.io/kube-scheduler:VERSION (for clusters that cannot pull)")
	schedulerVersion := flag.String("kube-scheduler-version", "v1.34.4", "tag for that image")
	local := flag.Bool("local", false, "also write the images a registry-less local cluster needs: the pause image and the example workload")
	flag.Parse()
	if err := run(*bin, *out, *scheduler, *schedulerVersion, *local); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(bin, out, scheduler, schedulerVersion string, local bool) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	read := func(path string) (map[string][]byte, error) {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("%w (run `make build` first)", err)
		}
		return map[string][]byte{filepath.Base(path): data}, nil
	}
	type item struct {
		file, binary, ref string
		entrypoint        []string
	}
	items := []item{
		{"corepin-nri.tar", filepath.Join(bin, "corepin-nri"), "corepin/corepin-nri:" + Tag, []string{"/corepin-nri"}},
		{"corepin-extender.tar", filepath.Join(bin, "corepin-extender"), "corepin/corepin-extender:" + Tag, []string{"/corepin-extender"}},
	}
	if local {
		items = append(items,
			item{"workload.tar", filepath.Join(bin, "workload"), "corepin/workload:" + Tag, []string{"/workload"}},
			item{"pause.tar", filepath.Join(bin, "workload"), "registry.k8s.io/pause:3.10", []string{"/workload", "pause"}})
	}
	if scheduler != "" {
		items = append(items, item{"kube-scheduler.tar", scheduler, "registry.k8s.io/kube-scheduler:" + schedulerVersion, []string{"/kube-scheduler"}})
	}
	for _, it := range items {
		files, err := read(it.binary)
		if err != nil {
			return err
		}
		path := filepath.Join(out, it.file)
		if err := ociimage.WriteTarball(path, ociimage.Image{Ref: it.ref, Files: files, Entrypoint: it.entrypoint}); err != nil {
			return err
		}
		fmt.Printf("images: %s -> %s\n", it.ref, path)
	}
	return nil
}
