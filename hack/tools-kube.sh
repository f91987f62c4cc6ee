#!/usr/bin/env bash
# Builds etcd, the Kubernetes control plane and kubelet, and the CNI plugins
# from the Go module proxy, through the nested tools modules in hack/tools/.
# Binaries are cached outside the checkout, keyed by version, so a fresh clone
# on the same machine reuses them and a version bump rebuilds.
set -euo pipefail
cd "$(dirname "$0")/tools"
cache=${COREPIN_CACHE:-$HOME/.cache/corepin}
export CGO_ENABLED=${CGO_ENABLED:-1} GOFLAGS=-trimpath

version_of() { # module dir, module path
  (cd "$1" && go list -m -f '{{.Version}}' "$2")
}

build() { # name, module dir, module path, packages...
  local name=$1 dir=$2 mod=$3; shift 3
  local version; version=$(version_of "$dir" "$mod")
  local dest="$cache/$name-$version/bin"
  if [ -f "$dest/.complete" ]; then
    echo "tools-kube: $name $version cached in $dest"
    return
  fi
  echo "tools-kube: building $name $version into $dest (takes minutes on 2 cores)"
  mkdir -p "$dest.tmp"
  (cd "$dir" && go build -p 2 -o "$dest.tmp/" "$@")
  # etcd's main package is go.etcd.io/etcd/server/v3: its binary is "server".
  [ -x "$dest.tmp/server" ] && mv "$dest.tmp/server" "$dest.tmp/etcd"
  touch "$dest.tmp/.complete"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
}

build etcd etcd go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3
build cni cni github.com/containernetworking/plugins \
  github.com/containernetworking/plugins/plugins/main/loopback \
  github.com/containernetworking/plugins/plugins/main/bridge \
  github.com/containernetworking/plugins/plugins/ipam/host-local \
  github.com/containernetworking/plugins/plugins/meta/portmap
build kube kube k8s.io/kubernetes \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubelet
# kubectl for the demo cluster (never assumed to be on the machine), and a
# static kube-scheduler for the corepin-scheduler image (the image has no libc).
build kubectl kube k8s.io/kubernetes k8s.io/kubernetes/cmd/kubectl
CGO_ENABLED=0 build kube-scheduler-static kube k8s.io/kubernetes k8s.io/kubernetes/cmd/kube-scheduler
