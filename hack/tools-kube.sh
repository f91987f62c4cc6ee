#!/usr/bin/env bash
# Builds etcd, Kubernetes (control plane, kubelet, kubeadm, kube-proxy,
# kubectl) and the CNI plugins from the Go module proxy, through the nested
# tools modules in hack/tools/. Everything is static (CGO_ENABLED=0), as
# upstream ships it, so the same binaries serve the local cluster and the
# images of the kind node. Binaries are cached outside the checkout, keyed by
# version, so a fresh clone on the same machine reuses them and a version
# bump rebuilds.
set -euo pipefail
cd "$(dirname "$0")/tools"
cache=${COREPIN_CACHE:-$HOME/.cache/corepin}
export CGO_ENABLED=0 GOFLAGS=-trimpath

version_of() { # module dir, module path
  (cd "$1" && go list -m -f '{{.Version}}' "$2")
}

build() { # name, module dir, module path, ldflags, packages...
  local name=$1 dir=$2 mod=$3 ldflags=$4; shift 4
  local version; version=$(version_of "$dir" "$mod")
  local dest="$cache/$name-$version/bin"
  if [ -f "$dest/.complete" ]; then
    echo "tools-kube: $name $version cached in $dest"
    return
  fi
  echo "tools-kube: building $name $version into $dest (takes minutes on 2 cores)"
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  (cd "$dir" && go build -p 2 -ldflags "${ldflags//VERSION/$version}" -o "$dest.tmp/" "$@")
  # etcd's main package is go.etcd.io/etcd/server/v3: its binary is "server".
  [ -x "$dest.tmp/server" ] && mv "$dest.tmp/server" "$dest.tmp/etcd"
  touch "$dest.tmp/.complete"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
}

# Version stamps as Kubernetes' own build sets them: kubeadm compares the
# kubelet's and the control plane's versions with its own.
kube_ldflags() {
  local v=$1 major minor out=""
  major=${v#v}; major=${major%%.*}
  minor=${v#v"$major".}; minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    out+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    out+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit=0000000000000000000000000000000000000000"
    out+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "-s -w$out"
}

build etcd etcd go.etcd.io/etcd/server/v3 "-s -w" go.etcd.io/etcd/server/v3
build cni cni github.com/containernetworking/plugins "-s -w" \
  github.com/containernetworking/plugins/plugins/main/loopback \
  github.com/containernetworking/plugins/plugins/main/bridge \
  github.com/containernetworking/plugins/plugins/main/ptp \
  github.com/containernetworking/plugins/plugins/ipam/host-local \
  github.com/containernetworking/plugins/plugins/meta/portmap
# KUBERNETES_VERSION=vX builds another Kubernetes than the module pins (for
# the kind bed on the oldest supported release): a copy of the module whose
# staging replaces follow that version's own go.mod.
kube_dir=kube
if [ -n "${KUBERNETES_VERSION:-}" ] && [ "$KUBERNETES_VERSION" != "$(version_of kube k8s.io/kubernetes)" ]; then
  kube_dir=$(mktemp -d)
  trap 'rm -rf "$kube_dir"' EXIT
  gomod=$(cd kube && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  staging=v0.${KUBERNETES_VERSION#v1.}
  {
    printf 'module corepin-tools-kube\n\ngo 1.26\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$KUBERNETES_VERSION"
    grep '=> ./staging' "$gomod" | awk -v v="$staging" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } > "$kube_dir/go.mod"
  cp kube/tools.go "$kube_dir/"
  (cd "$kube_dir" && go mod tidy) >/dev/null
fi
build kube "$kube_dir" k8s.io/kubernetes "$(kube_ldflags VERSION)" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubelet \
  k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl
