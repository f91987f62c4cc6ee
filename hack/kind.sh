#!/usr/bin/env bash
# The kind test bed (contract section 11): one control plane and two
# workers, corepin installed the way a user installs it.
#
#   hack/kind.sh up      Docker (installed/started if needed), the node image
#                        (hack/kind-image.sh, or $KIND_NODE_IMAGE), the cluster,
#                        corepin's images by `kind load`, corepin by Helm
#                        (COREPIN_INSTALL=kustomize: kubectl apply -k deploy/)
#   hack/kind.sh test    the e2e suite against it
#   hack/kind.sh down    delete the cluster, stop dockerd if `up` started it
#
# A failed `up` exports the cluster's logs under bin/kind-logs and deletes
# what it created.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${COREPIN_CACHE:-$HOME/.cache/corepin}
name=${KIND_CLUSTER:-corepin}
kubeconfig=${KIND_KUBECONFIG:-$repo/bin/kind.kubeconfig}
install_with=${COREPIN_INSTALL:-helm}
kind_version=${KIND_VERSION:-v0.33.0}
kube_version=${KUBERNETES_VERSION:-$(cd hack/tools/kube && go list -m -f '{{.Version}}' k8s.io/kubernetes)}
helm_version=$(cd hack/tools/helm 2>/dev/null && go list -m -f '{{.Version}}' helm.sh/helm/v3 2>/dev/null || true)
export PATH=$cache/kind-$kind_version/bin:$cache/kube-$kube_version/bin:$cache/helm-$helm_version/bin:$PATH
log() { echo "kind: $*" >&2; }

fail() { # message: logs exported, cluster deleted, nothing left running
  log "FAILED: $*"
  mkdir -p bin/kind-logs
  kind export logs --name "$name" bin/kind-logs >/dev/null 2>&1 && log "logs exported to bin/kind-logs"
  kubectl --kubeconfig "$kubeconfig" get pods -A -o wide > bin/kind-logs/pods.txt 2>&1 || true
  kubectl --kubeconfig "$kubeconfig" get events -A > bin/kind-logs/events.txt 2>&1 || true
  kind delete cluster --name "$name" >/dev/null 2>&1 || true
  hack/docker.sh stop || true
  exit 1
}

# wait_for WHAT SECONDS CMD...: poll until CMD succeeds, else fail.
wait_for() {
  local what=$1 secs=$2; shift 2
  for ((i = 0; i < secs; i += 2)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 2
  done
  fail "timed out after ${secs}s waiting for $what"
}

all_nodes_ready() {
  local not_ready
  not_ready=$(kubectl --kubeconfig "$kubeconfig" get nodes --no-headers 2>/dev/null | awk '$2 != "Ready" {print $1}')
  [ "$(kubectl --kubeconfig "$kubeconfig" get nodes --no-headers 2>/dev/null | wc -l)" -eq 3 ] && [ -z "$not_ready" ]
}

node_image() {
  if [ -n "${KIND_NODE_IMAGE:-}" ]; then
    # An upstream image where a registry is reachable; the test bed's
    # Kubernetes version must match (kubectl, the e2e suite, deploy/).
    docker image inspect "$KIND_NODE_IMAGE" >/dev/null 2>&1 || docker pull "$KIND_NODE_IMAGE" >&2 ||
      { log "cannot find or pull KIND_NODE_IMAGE=$KIND_NODE_IMAGE"; return 1; }
    echo "$KIND_NODE_IMAGE"
  else
    hack/kind-image.sh | tail -n 1
  fi
}

up() {
  hack/docker.sh ensure
  command -v kind >/dev/null || hack/tools-kind.sh
  if kind get clusters 2>/dev/null | grep -qx "$name"; then
    log "a kind cluster named $name already exists: \`make kind-down\` (or KIND_CLUSTER=another-name) first"
    exit 2
  fi
  local image version
  image=$(node_image) || exit 1
  version=$(docker run --rm --entrypoint cat "$image" /kind/version 2>/dev/null || true)
  if [ "$version" != "$kube_version" ]; then
    log "node image $image is Kubernetes ${version:-of unknown version}; this checkout's test bed is $kube_version"
    log "(build one with \`make kind-image\`, or set KIND_NODE_IMAGE=kindest/node:$kube_version)"
    exit 2
  fi
  local config=$repo/deploy/kind/kind-cluster.yaml
  if [ -z "${KIND_NODE_IMAGE:-}" ]; then
    # The image built here carries its own pod network (no kindnetd offline).
    config=$repo/bin/kind-cluster.yaml
    mkdir -p bin
    # and its etcd and CoreDNS under the tags of what they are.
    local etcd_version coredns_version
    etcd_version=$(cd hack/tools/etcd && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
    coredns_version=$(cd hack/tools/coredns && go list -m -f '{{.Version}}' github.com/coredns/coredns)
    printf '%s\n' "- |" "  kind: ClusterConfiguration" "  etcd: {local: {imageTag: \"${etcd_version#v}-0\"}}" \
      "  dns: {imageTag: \"$coredns_version\"}" > bin/kind-kubeadm-patch.yaml
    { sed '/^kubeadmConfigPatches:/r bin/kind-kubeadm-patch.yaml' deploy/kind/kind-cluster.yaml
      echo "networking: {disableDefaultCNI: true, kubeProxyMode: iptables}"; } > "$config"
  fi
  log "creating cluster $name from $image"
  kind create cluster --name "$name" --image "$image" --config "$config" --kubeconfig "$kubeconfig" --wait 120s ||
    fail "kind create cluster"
  export KUBECONFIG=$kubeconfig
  if ! (for ((i = 0; i < 90; i++)); do all_nodes_ready && exit 0; sleep 2; done; exit 1); then
    fail "nodes not Ready after 180s: $(kubectl --kubeconfig "$kubeconfig" get nodes --no-headers 2>&1 | awk '$2 != "Ready" {printf "%s (%s) ", $1, $2}')"
  fi
  make -s images >/dev/null
  go run ./hack/images --bin bin --out bin/images --local >/dev/null
  for image in corepin-nri corepin-extender workload; do
    kind load image-archive --name "$name" "bin/images/$image.tar" >/dev/null || fail "kind load $image"
  done
  install
  wait_for "corepin-nri on every node" 180 kubectl -n corepin-system rollout status daemonset/corepin-nri --timeout 5s
  wait_for "corepin-scheduler" 180 kubectl -n corepin-system rollout status deployment/corepin-scheduler --timeout 5s
  for node in $(kubectl get nodes -o name); do
    wait_for "the topology of $node" 60 bash -c "kubectl get $node -o jsonpath='{.metadata.annotations.corepin\\.io/topology}' | grep -q cpus"
  done
  log "up: $name with corepin ($install_with); kubeconfig:"
  echo "$kubeconfig"
}

install() {
  case $install_with in
    helm)
      command -v helm >/dev/null || hack/tools-helm.sh >&2
      # The chart renders its namespace (Pod Security labels): Helm keeps
      # the release in it, so it is created first and adopted.
      kubectl create namespace corepin-system >/dev/null || fail "kubectl create namespace corepin-system"
      # The chart's previous version, so that the suite's `helm upgrade`
      # is the one a user makes.
      local chart; chart=$(previous_chart)
      log "helm install from $chart"
      helm install corepin "$chart" --namespace corepin-system --take-ownership \
        --set images.kubeScheduler.tag="$kube_version" --wait --timeout 180s ${COREPIN_HELM_ARGS:-} >/dev/null || fail "helm install"
      ;;
    kustomize)
      kubectl apply -k deploy/ >/dev/null || fail "kubectl apply -k deploy/"
      ;;
    *) log "COREPIN_INSTALL=$install_with: helm or kustomize"; exit 2 ;;
  esac
}

# previous_chart: deploy/chart/corepin as of the newest commit whose chart
# version differs from the checkout's, extracted under bin/; the checkout's
# own chart where there is none (no history, or the first version).
previous_chart() {
  local current rev version dest=$repo/bin/chart-previous
  current=$(awk '/^version:/ {print $2}' deploy/chart/corepin/Chart.yaml)
  for rev in $(git log --format=%H -- deploy/chart/corepin/Chart.yaml 2>/dev/null); do
    version=$(git show "$rev:deploy/chart/corepin/Chart.yaml" 2>/dev/null | awk '/^version:/ {print $2}')
    if [ -n "$version" ] && [ "$version" != "$current" ]; then
      rm -rf "$dest" && mkdir -p "$dest"
      git archive "$rev" deploy/chart/corepin | tar -x -C "$dest" --strip-components 2
      echo "$dest/corepin"
      return
    fi
  done
  echo "$repo/deploy/chart/corepin"
}

down() {
  if command -v kind >/dev/null && docker info >/dev/null 2>&1; then
    kind delete cluster --name "$name" 2>&1 | grep -v '^Deleting cluster' >&2 || true
  fi
  rm -f "$kubeconfig"
  hack/docker.sh stop
}

case "${1:-}" in
  up) up ;;
  test)
    KUBECONFIG=$kubeconfig COREPIN_E2E_BED=kind COREPIN_INSTALL=$install_with HELM=$(command -v helm || true) \
      go test -count=1 -tags e2e -timeout 30m -v ./test/e2e/... ;;
  down) down ;;
  *) echo "usage: $0 up|test|down" >&2; exit 2 ;;
esac
