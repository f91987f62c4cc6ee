#!/usr/bin/env bash
# The demo on the single-node cluster of hack/cluster.sh: creates the
# examples, toggles release mode, and prints what each container sees.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(hack/cluster.sh env)"

kubectl apply -f examples/web.yaml -f examples/db-samecorefirst.yaml >/dev/null
kubectl rollout status deploy/web --timeout 120s >/dev/null
kubectl wait --for=condition=Ready pod/db-samecore --timeout 120s >/dev/null
# Created after db-samecore holds the node's only exclusive CPU (2-CPU machine).
kubectl apply -f examples/db-spread.yaml >/dev/null
for _ in $(seq 60); do
  kubectl get events --field-selector involvedObject.name=db-spread,reason=FailedScheduling -o name | grep -q . && break
  sleep 1
done

# cpus POD: the CPUs the pod's first container may run on, read inside it.
cpus() {
  kubectl exec "$1" -- /workload status 2>/dev/null | awk '/Cpus_allowed_list/ {print $2}'
}

table() {
  printf '%-26s %-14s %-10s %-10s %s\n' POD NODE MODE CPUSET NOTE
  kubectl get pods -o jsonpath='{range .items[*]}{.metadata.name}|{.spec.nodeName}|{.metadata.annotations.corepin\.io/cpu-mode}|{.status.phase}{"\n"}{end}' |
  while IFS='|' read -r pod node mode phase; do
    [ -n "$mode" ] || mode=shared
    if [ "$phase" = Running ]; then
      printf '%-26s %-14s %-10s %-10s %s\n' "$pod" "$node" "$mode" "$(cpus "$pod")" \
        "$(kubectl get pod "$pod" -o jsonpath='{.metadata.annotations.corepin\.io/alloc-status}')"
    else
      printf '%-26s %-14s %-10s %-10s %s\n' "$pod" "-" "$mode" "-" \
        "$phase: $(kubectl get events --field-selector involvedObject.name="$pod",reason=FailedScheduling -o jsonpath='{range .items[*]}{.message}{"\n"}{end}' | tail -1)"
    fi
  done
}

echo
echo "== pods and the CPUs each container sees (node: $(nproc) CPUs)"
table
echo
echo "== shared pool published by the node plugin"
kubectl get node corepin-node -o jsonpath='{.metadata.annotations.corepin\.io/shared-pool}{"\n"}'

echo
echo "== release mode: kubectl annotate pod db-samecore corepin.io/release-isolate-mode=true"
kubectl annotate pod db-samecore corepin.io/release-isolate-mode=true >/dev/null
sleep 1
echo "db-samecore now sees $(cpus db-samecore)"
kubectl annotate pod db-samecore corepin.io/release-isolate-mode- >/dev/null
sleep 1
echo "and after removing the annotation: $(cpus db-samecore)"

cat <<EOF

The cluster keeps running. Use it with:
  $(hack/cluster.sh env)
  kubectl get pods -o wide; kubectl describe pod db-spread
Tear it down with: make demo-down

On a machine with more CPUs both databases run (the exclusive limit is 2/3 of the
non-reserved CPUs), each on its own cores, and the web pods share the rest.
EOF
