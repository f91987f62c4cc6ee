#!/usr/bin/env bash
# Builds the helm CLI that make test-chart lints and renders the chart with,
# from the Go module proxy (the version hack/tools/helm/go.mod pins), cached
# under $COREPIN_CACHE by version: $COREPIN_CACHE/helm-VERSION/bin/helm.
set -euo pipefail
cd "$(dirname "$0")"
cache=${COREPIN_CACHE:-$HOME/.cache/corepin}
export CGO_ENABLED=0 GOFLAGS=-trimpath

cached() { # dir: true when a finished build is there
  if [ -f "$1/.complete" ]; then echo "tools-helm: cached $1"; return 0; fi
  rm -rf "$1" && mkdir -p "$1"
  return 1
}

helm_version=$(cd tools/helm && go list -m -f '{{.Version}}' helm.sh/helm/v3)
dest=$cache/helm-$helm_version/bin
cached "$dest" || {
  echo "tools-helm: building helm $helm_version into $dest"
  # -X: without it `helm version` reports the module's placeholder, not the pinned version.
  (cd tools/helm && go build -p 2 -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version" \
    -o "$dest/helm" helm.sh/helm/v3/cmd/helm)
  touch "$dest/.complete"
}
