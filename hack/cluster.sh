#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, for `make demo` and
# the e2e suite: etcd, kube-apiserver, kube-controller-manager, the default
# kube-scheduler, containerd with NRI, runc, the CNI bridge plugin and a
# kubelet (cpuManagerPolicy none). corepin itself runs the way users run it:
# deploy/local (the DaemonSet and the corepin-scheduler Deployment) with the
# images `make images` builds, imported into containerd.
#
#   hack/cluster.sh up      bring it up (idempotent: down first)
#   hack/cluster.sh down    stop everything and remove the state
#   hack/cluster.sh env     print the export line for kubectl
#   hack/cluster.sh restart kubelet|containerd|...   restart one component
#
# Everything lives in $COREPIN_CLUSTER (default /var/lib/corepin-cluster).
# Binaries come from $COREPIN_CACHE, built by `make tools`.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${COREPIN_CACHE:-$HOME/.cache/corepin}
dir=${COREPIN_CLUSTER:-/var/lib/corepin-cluster}
node=corepin-node
api_port=6443
etcd_port=12379

kube_version=$(cd hack/tools/kube && go list -m -f '{{.Version}}' k8s.io/kubernetes)
ctrd_version=$(cd hack/tools/containerd && go list -m -f '{{.Version}}' github.com/containerd/containerd/v2)
etcd_version=$(cd hack/tools/etcd && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
cni_version=$(cd hack/tools/cni && go list -m -f '{{.Version}}' github.com/containernetworking/plugins)
kube_bin=$cache/kube-$kube_version/bin
kubectl=$kube_bin/kubectl
ctrd_bin=$cache/containerd-$ctrd_version/bin
etcd_bin=$cache/etcd-$etcd_version/bin
cni_bin=$cache/cni-$cni_version/bin

log() { echo "cluster: $*" >&2; }

# start NAME CMD...: a detached process with its log and pid in $dir. It
# keeps none of the caller's other descriptors: a kubelet restarted under
# `flock /tmp/corepin-bed.lock` would otherwise hold the bed's lock for as
# long as it runs.
start() {
  local name=$1; shift
  mkdir -p "$dir/cmds"
  printf '%q ' "$@" > "$dir/cmds/$name"
  setsid bash -c 'for fd in /proc/self/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done 2>/dev/null; exec "$@"' \
    "$name" "$@" >>"$dir/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$dir/pids/$name"
}

# restart NAME: stop one component and start it again with the same command
# line (containers keep running across a containerd or kubelet restart).
restart() {
  local name=$1 pid
  [ -f "$dir/cmds/$name" ] || { log "no component $name"; exit 2; }
  pid=$(cat "$dir/pids/$name")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
  export PATH="$ctrd_bin:$PATH"
  eval "start $name $(cat "$dir/cmds/$name")"
  log "restarted $name"
}

# wait_for WHAT SECONDS CMD...: poll until CMD succeeds.
wait_for() {
  local what=$1 secs=$2; shift 2
  for ((i = 0; i < secs * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  log "timed out waiting for $what; last log lines:"
  tail -n 30 "$dir"/logs/*.log >&2 || true
  return 1
}

down() {
  if [ -d "$dir/pids" ]; then
    # The kubelet first, so it does not restart what we stop.
    for name in kubelet kube-scheduler kube-controller-manager containerd kube-apiserver etcd; do
      [ -f "$dir/pids/$name" ] || continue
      local pid; pid=$(cat "$dir/pids/$name")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -9 "$pid" 2>/dev/null || true
    done
  fi
  # Containers outlive containerd: stop the shims (their command line has
  # -id before -address) and every process left in the pods' cgroups.
  pkill -9 -f "containerd-shim-runc-v2 .*-address $dir/containerd.sock" 2>/dev/null || true
  for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$root" ] || continue
    find "$root" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u | xargs -r kill -9 2>/dev/null || true
  done
  # Unmount whatever the kubelet and containerd left.
  if [ -d "$dir" ]; then
    grep -o " $dir[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$dir"
  fi
  # Empty pod cgroups are left by a killed kubelet; remove ours.
  for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [ -d "$root" ] && find "$root" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  rm -f /var/run/nri/nri.sock
  log "down"
}

up() {
  down
  for b in "$kube_bin/kubelet" "$kubectl" "$ctrd_bin/containerd" "$etcd_bin/etcd" "$cni_bin/bridge" \
    "$kube_bin/kube-scheduler" "$repo/bin/images/corepin-nri.tar"; do
    [ -e "$b" ] || { log "missing $b (run make tools images)"; exit 1; }
  done
  mkdir -p "$dir"/{logs,pids,certs,cni/net.d,kubelet} /var/run/nri
  export PATH="$ctrd_bin:$PATH"

  log "etcd and kube-apiserver on https://127.0.0.1:$api_port"
  start etcd "$etcd_bin/etcd" --name corepin --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
    --initial-cluster corepin=http://127.0.0.1:12380 --log-level warn
  openssl genrsa -out "$dir/certs/sa.key" 2048 2>/dev/null
  local admin_token kubelet_token
  admin_token=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
  kubelet_token=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
  cat > "$dir/certs/tokens.csv" <<EOF
$admin_token,admin,admin,system:masters
$kubelet_token,system:node:$node,system:node:$node,system:nodes
EOF
  start kube-apiserver "$kube_bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" --cert-dir "$dir/certs" \
    --service-account-key-file "$dir/certs/sa.key" --service-account-signing-key-file "$dir/certs/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --token-auth-file "$dir/certs/tokens.csv" \
    --authorization-mode Node,RBAC --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
    --kubelet-preferred-address-types InternalIP --endpoint-reconciler-type none
  for who in admin kubelet; do
    local token=$admin_token
    [ $who = kubelet ] && token=$kubelet_token
    cat > "$dir/$who.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: corepin
  cluster: {server: "https://127.0.0.1:$api_port", insecure-skip-tls-verify: true}
users:
- name: $who
  user: {token: "$token"}
contexts:
- name: corepin
  context: {cluster: corepin, user: $who}
current-context: corepin
EOF
  done
  export KUBECONFIG=$dir/admin.kubeconfig
  wait_for "kube-apiserver" 90 "$kubectl" get --raw /readyz

  log "kube-controller-manager and the default kube-scheduler"
  start kube-controller-manager "$kube_bin/kube-controller-manager" --kubeconfig "$KUBECONFIG" \
    --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
    --root-ca-file "$dir/certs/apiserver.crt" --service-account-private-key-file "$dir/certs/sa.key" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 10267
  start kube-scheduler "$kube_bin/kube-scheduler" --kubeconfig "$KUBECONFIG" \
    --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
    --leader-elect=false --bind-address 127.0.0.1 --secure-port 10269

  log "containerd $ctrd_version with NRI on /var/run/nri/nri.sock"
  cat > "$dir/cni/net.d/10-corepin-bridge.conflist" <<'EOF'
{"cniVersion": "1.0.0", "name": "corepin", "plugins": [
  {"type": "bridge", "bridge": "corepin0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "loopback"}]}
EOF
  cat > "$dir/containerd.toml" <<EOF
version = 3
root = "$dir/containerd/root"
state = "$dir/containerd/state"
[grpc]
  address = "$dir/containerd.sock"
[plugins."io.containerd.nri.v1.nri"]
  disable = false
  socket_path = "/var/run/nri/nri.sock"
  plugin_registration_timeout = "5s"
  plugin_request_timeout = "2s"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["$cni_bin"]
  conf_dir = "$dir/cni/net.d"
[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = "registry.k8s.io/pause:3.10"
EOF
  start containerd "$ctrd_bin/containerd" --config "$dir/containerd.toml"
  wait_for "containerd" 60 "$ctrd_bin/ctr" --address "$dir/containerd.sock" version
  for img in "$repo"/bin/images/*.tar; do
    "$ctrd_bin/ctr" --address "$dir/containerd.sock" -n k8s.io images import --no-unpack=false "$img" >/dev/null
  done

  log "kubelet $kube_version as node $node"
  cat > "$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
cpuManagerPolicy: none
containerRuntimeEndpoint: unix://$dir/containerd.sock
authentication:
  anonymous: {enabled: true}   # local test cluster: lets the API server exec and read logs
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
EOF
  start kubelet "$kube_bin/kubelet" --config "$dir/kubelet.yaml" --kubeconfig "$dir/kubelet.kubeconfig" \
    --root-dir "$dir/kubelet" --hostname-override "$node" -v 1
  wait_for "node $node Ready" 120 bash -c "'$kubectl' get node $node -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"

  log "corepin from deploy/local"
  "$kubectl" apply -k deploy/local >/dev/null
  wait_for "corepin-nri on $node" 120 "$kubectl" -n corepin-system rollout status ds/corepin-nri --timeout 1s
  wait_for "corepin-scheduler" 120 "$kubectl" -n corepin-system rollout status deploy/corepin-scheduler --timeout 1s
  wait_for "the topology annotation" 60 bash -c "'$kubectl' get node $node -o jsonpath='{.metadata.annotations.corepin\\.io/topology}' | grep -q cpus"
  log "up: export KUBECONFIG=$KUBECONFIG"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  restart) restart "${2:?component}" ;;
  env) echo "export KUBECONFIG=$dir/admin.kubeconfig PATH=$(dirname "$kubectl"):\$PATH" ;;
  *) echo "usage: $0 up|down|env|restart NAME" >&2; exit 2 ;;
esac
