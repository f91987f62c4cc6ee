// Command images writes container images as image tarballs from static
// binaries (see `make images` and hack/kind-image.sh): no Docker, no
// registry. Images that stand in for public ones are laid out like them:
// registry.k8s.io/kube-* hold only /usr/local/bin/NAME and have no
// entrypoint (kubeadm and deploy/ give the command), etcd likewise, CoreDNS
// is /coredns with that entrypoint, pause is /pause.
//
//	go run ./hack/images --bin bin --out bin/images [--local] [--kube-bin DIR --kube-version V]
//	  [--kind --etcd BIN --etcd-tag T --coredns BIN --coredns-tag T --pause-tag T --proxy-base TAR]
//	go run ./hack/images --bin bin --out bin/bench --only-bench --bench-base TAR
//
// --bench-base writes corepin/bench-postgres:dev for make bench-isolation: a
// Debian root filesystem with postgresql-15 and stress-ng (mmdebstrap's
// tar, hack/bench-isolation.sh) and the workload binary at /workload.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/corepin/corepin/internal/ociimage"
)

// Tag is the tag of locally built images (deploy/ refers to it).
const Tag = "dev"

type options struct {
	bin, out            string
	local               bool
	kubeBin, kubeVer    string
	kind                bool
	etcd, etcdTag       string
	coredns, corednsTag string
	pauseTag, proxyBase string
	benchBase           string
	onlyBench           bool
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin", "directory holding the project's static binaries (make build)")
	flag.StringVar(&o.out, "out", "bin/images", "where to write the tarballs")
	flag.BoolVar(&o.local, "local", false, "also write the example workload and the pause image the local cluster's containerd uses")
	flag.StringVar(&o.kubeBin, "kube-bin", "", "directory of static Kubernetes binaries: also write registry.k8s.io/kube-scheduler:VERSION in the public layout")
	flag.StringVar(&o.kubeVer, "kube-version", "", "the Kubernetes version those binaries are (the images' tag)")
	flag.BoolVar(&o.kind, "kind", false, "also write every image kubeadm pulls (kube-apiserver, kube-controller-manager, kube-proxy, etcd, coredns, pause) in the public layout")
	flag.StringVar(&o.etcd, "etcd", "", "static etcd binary (with --kind)")
	flag.StringVar(&o.etcdTag, "etcd-tag", "", "tag of registry.k8s.io/etcd kubeadm asks for, e.g. 3.7.0-0")
	flag.StringVar(&o.coredns, "coredns", "", "static coredns binary (with --kind)")
	flag.StringVar(&o.corednsTag, "coredns-tag", "", "tag of registry.k8s.io/coredns/coredns kubeadm asks for, e.g. v1.14.6")
	flag.StringVar(&o.pauseTag, "pause-tag", "", "tag of registry.k8s.io/pause kubeadm asks for, e.g. 3.10.2")
	flag.StringVar(&o.proxyBase, "proxy-base", "", "root filesystem tar with iptables, nftables and conntrack for kube-proxy (with --kind)")
	flag.StringVar(&o.benchBase, "bench-base", "", "root filesystem tar with PostgreSQL and stress-ng: also write corepin/bench-postgres:"+Tag)
	flag.BoolVar(&o.onlyBench, "only-bench", false, "write only the --bench-base image")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

// image is one tarball to write: binaries at their paths in the image.
type image struct {
	file       string
	ref        string
	files      map[string]string // path in the image -> binary on this machine
	entrypoint []string
	base       string
}

func run(o options) error {
	items := []image{
		{file: "corepin-nri.tar", ref: "corepin/corepin-nri:" + Tag,
			files: map[string]string{"corepin-nri": filepath.Join(o.bin, "corepin-nri")}, entrypoint: []string{"/corepin-nri"}},
		{file: "corepin-extender.tar", ref: "corepin/corepin-extender:" + Tag,
			files: map[string]string{"corepin-extender": filepath.Join(o.bin, "corepin-extender")}, entrypoint: []string{"/corepin-extender"}},
		{file: "corepin-placer.tar", ref: "corepin/corepin-placer:" + Tag,
			files: map[string]string{"corepin-placer": filepath.Join(o.bin, "corepin-placer")}, entrypoint: []string{"/corepin-placer"}},
	}
	if o.local {
		items = append(items,
			image{file: "workload.tar", ref: "corepin/workload:" + Tag,
				files: map[string]string{"workload": filepath.Join(o.bin, "workload")}, entrypoint: []string{"/workload"}},
			pause("pause.tar", "3.10", filepath.Join(o.bin, "workload")))
	}
	if o.kubeBin != "" || o.kind {
		if o.kubeBin == "" || o.kubeVer == "" {
			return fmt.Errorf("--kube-bin and --kube-version go together (and --kind needs both)")
		}
		items = append(items, kube("kube-scheduler", o))
	}
	if o.kind {
		for flagName, v := range map[string]string{"--etcd": o.etcd, "--etcd-tag": o.etcdTag, "--coredns": o.coredns,
			"--coredns-tag": o.corednsTag, "--pause-tag": o.pauseTag, "--proxy-base": o.proxyBase} {
			if v == "" {
				return fmt.Errorf("--kind needs %s", flagName)
			}
		}
		proxy := kube("kube-proxy", o)
		proxy.base = o.proxyBase
		items = append(items, kube("kube-apiserver", o), kube("kube-controller-manager", o), proxy,
			image{file: "etcd.tar", ref: "registry.k8s.io/etcd:" + o.etcdTag,
				files: map[string]string{"usr/local/bin/etcd": o.etcd}},
			image{file: "coredns.tar", ref: "registry.k8s.io/coredns/coredns:" + o.corednsTag,
				files: map[string]string{"coredns": o.coredns}, entrypoint: []string{"/coredns"}},
			pause("pause-"+o.pauseTag+".tar", o.pauseTag, filepath.Join(o.bin, "workload")))
	}
	if o.onlyBench {
		items = nil
	}
	if o.benchBase != "" {
		items = append(items, image{file: "bench-postgres.tar", ref: "corepin/bench-postgres:" + Tag, base: o.benchBase,
			files: map[string]string{"workload": filepath.Join(o.bin, "workload")}})
	} else if o.onlyBench {
		return fmt.Errorf("--only-bench needs --bench-base")
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return err
	}
	for _, it := range items {
		files := map[string][]byte{}
		for inImage, onHost := range it.files {
			data, err := os.ReadFile(onHost)
			if err != nil {
				return fmt.Errorf("%s: %w (run `make build` or the tools' builds first)", it.ref, err)
			}
			files[inImage] = data
		}
		path := filepath.Join(o.out, it.file)
		if err := ociimage.WriteTarball(path, ociimage.Image{Ref: it.ref, Files: files, Entrypoint: it.entrypoint, Base: it.base}); err != nil {
			return err
		}
		fmt.Printf("images: %s -> %s\n", it.ref, path)
	}
	return nil
}

// kube is registry.k8s.io/NAME:VERSION as Kubernetes' build/server-image
// makes it: the binary at /usr/local/bin/NAME, no entrypoint.
func kube(name string, o options) image {
	return image{file: name + ".tar", ref: "registry.k8s.io/" + name + ":" + o.kubeVer,
		files: map[string]string{"usr/local/bin/" + name: filepath.Join(o.kubeBin, name)}}
}

// pause is the sandbox image: the project's workload binary, which waits
// for SIGTERM when its first argument is "pause", at /pause.
func pause(file, tag, workload string) image {
	return image{file: file, ref: "registry.k8s.io/pause:" + strings.TrimPrefix(tag, ":"),
		files: map[string]string{"pause": workload}, entrypoint: []string{"/pause", "pause"}}
}
