#!/usr/bin/env bash
# Builds containerd, its runc shim and ctr from the Go module proxy through
# hack/tools/containerd, cached by version under $COREPIN_CACHE, and installs
# Debian's runc (built with seccomp) when it is missing.
# CONTAINERD_VERSION=vX builds another version than the module pins (a copy
# module resolved against that version alone), e.g. for a kind image with containerd 2.1.
set -euo pipefail
cd "$(dirname "$0")/tools/containerd"
cache=${COREPIN_CACHE:-$HOME/.cache/corepin}
pinned=$(go list -m -f '{{.Version}}' github.com/containerd/containerd/v2)
version=${CONTAINERD_VERSION:-$pinned}
dest="$cache/containerd-$version/bin"
if [ -f "$dest/.complete" ]; then
  echo "tools-containerd: containerd $version cached in $dest"
else
  echo "tools-containerd: building containerd $version into $dest"
  module=$PWD
  if [ "$version" != "$pinned" ]; then
    module=$(mktemp -d)
    trap 'rm -rf "$module"' EXIT
    cp tools.go "$module/"
    printf 'module corepin-tools-containerd\n\ngo 1.26\n\nrequire github.com/containerd/containerd/v2 %s\n' "$version" > "$module/go.mod"
    (cd "$module" && go mod tidy) >/dev/null
  fi
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  (cd "$module" && GOFLAGS=-trimpath go build -p 2 -o "$dest.tmp/" \
    github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    github.com/containerd/containerd/v2/cmd/ctr)
  touch "$dest.tmp/.complete"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
fi
if ! command -v runc >/dev/null 2>&1; then
  echo "tools-containerd: installing Debian's runc"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq runc >/dev/null
fi
runc --version | head -1
