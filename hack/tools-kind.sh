#!/usr/bin/env bash
# Builds what the kind test bed needs beyond hack/tools-kube.sh, from the Go
# module proxy, cached under $COREPIN_CACHE by version: the kind CLI and
# CoreDNS (for the node image's registry.k8s.io/coredns/coredns) and crictl
# (kind's `load docker-image` and `export logs` run it on the nodes).
set -euo pipefail
cd "$(dirname "$0")"
cache=${COREPIN_CACHE:-$HOME/.cache/corepin}
export CGO_ENABLED=0 GOFLAGS=-trimpath
KIND_VERSION=${KIND_VERSION:-v0.33.0}
CRICTL_VERSION=${CRICTL_VERSION:-v1.37.0}

cached() { # dir: true when a finished build is there
  if [ -f "$1/.complete" ]; then echo "tools-kind: cached $1"; return 0; fi
  rm -rf "$1" && mkdir -p "$1"
  return 1
}

dest=$cache/kind-$KIND_VERSION/bin
cached "$dest" || {
  echo "tools-kind: building kind $KIND_VERSION into $dest"
  GOBIN=$dest go install "sigs.k8s.io/kind@$KIND_VERSION"
  touch "$dest/.complete"
}

coredns_version=$(cd tools/coredns && go list -m -f '{{.Version}}' github.com/coredns/coredns)
dest=$cache/coredns-$coredns_version/bin
cached "$dest" || {
  echo "tools-kind: building coredns $coredns_version into $dest"
  (cd tools/coredns && go build -p 2 -ldflags "-s -w" -o "$dest/coredns" github.com/coredns/coredns)
  touch "$dest/.complete"
}

dest=$cache/crictl-$CRICTL_VERSION/bin
cached "$dest" || {
  echo "tools-kind: building crictl $CRICTL_VERSION into $dest"
  GOBIN=$dest go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  touch "$dest/.complete"
}
