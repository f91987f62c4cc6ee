#!/usr/bin/env bash
# The e2e suite against a kind cluster with NRI enabled (needs Docker and
# kind on PATH): `make test-kind`. The same test code as `make test-e2e`,
# except the restarts of kubelet and containerd, which need the local
# cluster of hack/cluster.sh and are skipped.
#
#   hack/kind.sh up      create the cluster, load the images, apply deploy/
#   hack/kind.sh test    run test/e2e against it
#   hack/kind.sh down    delete the cluster
set -euo pipefail
cd "$(dirname "$0")/.."

name=${KIND_CLUSTER:-corepin}
kubeconfig=${KIND_KUBECONFIG:-$PWD/bin/kind.kubeconfig}

need() { command -v "$1" >/dev/null || { echo "kind: $1 is not installed ($2)" >&2; exit 2; }; }

up() {
  need docker "https://docs.docker.com/engine/install/"
  need kind "go install sigs.k8s.io/kind@latest"
  need kubectl "or use \$COREPIN_CACHE/kubectl-*/bin/kubectl from make tools-kube"
  kind delete cluster --name "$name" >/dev/null 2>&1 || true
  kind create cluster --name "$name" --config deploy/kind/kind-cluster.yaml --kubeconfig "$kubeconfig"
  # corepin's images and the example workload; pause and kube-scheduler are
  # pulled by the kind nodes themselves.
  for image in corepin-nri corepin-extender workload; do
    kind load image-archive --name "$name" "bin/images/$image.tar"
  done
  export KUBECONFIG=$kubeconfig
  kubectl apply -k deploy/
  kubectl -n corepin-system rollout status daemonset/corepin-nri --timeout=180s
  kubectl -n corepin-system rollout status deployment/corepin-scheduler --timeout=180s
}

case "${1:-}" in
  up) up ;;
  test) KUBECONFIG=$kubeconfig go test -count=1 -tags e2e -timeout 20m -v ./test/e2e/... ;;
  down) kind delete cluster --name "$name" ;;
  *) echo "usage: $0 up|test|down" >&2; exit 2 ;;
esac
