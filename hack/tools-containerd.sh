#!/usr/bin/env bash
# Builds containerd, its runc shim and ctr from the Go module proxy through
# hack/tools/containerd, cached by version under $COREPIN_CACHE, and installs
# Debian's runc (built with seccomp) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/tools/containerd"
cache=${COREPIN_CACHE:-$HOME/.cache/corepin}
version=$(go list -m -f '{{.Version}}' github.com/containerd/containerd/v2)
dest="$cache/containerd-$version/bin"
if [ -f "$dest/.complete" ]; then
  echo "tools-containerd: containerd $version cached in $dest"
else
  echo "tools-containerd: building containerd $version into $dest"
  mkdir -p "$dest.tmp"
  GOFLAGS=-trimpath go build -p 2 -o "$dest.tmp/" \
    github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    github.com/containerd/containerd/v2/cmd/ctr
  touch "$dest.tmp/.complete"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
fi
if ! command -v runc >/dev/null 2>&1; then
  echo "tools-containerd: installing Debian's runc"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq runc >/dev/null
fi
runc --version | head -1
