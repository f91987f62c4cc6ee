#!/usr/bin/env bash
# make bench-isolation: PostgreSQL (Debian's postgresql-15) beside noisy
# neighbours (Debian's stress-ng) on the single-node cluster of
# hack/cluster.sh, pinned by corepin, unpinned, and pinned by the kubelet's
# static CPU manager; and the start-up window probe (workload spin). See
# docs/benchmarks.md for what the rows mean. Uses the running cluster if
# there is one (and puts back what it changed), else brings one up and takes
# it down again. The last line is contract section 11's JSON.
#
#   BENCH_ROUNDS=3 BENCH_SECONDS=10 BENCH_SCALE=5 hack/bench-isolation.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${COREPIN_CACHE:-$HOME/.cache/corepin}
dir=${COREPIN_CLUSTER:-/var/lib/corepin-cluster}
rounds=${BENCH_ROUNDS:-3}
secs=${BENCH_SECONDS:-10}
scale=${BENCH_SCALE:-5}
probe_secs=10
out=${BENCH_OUT:-$repo/bin/bench}
ns=corepin-bench
node=corepin-node
image=corepin/bench-postgres:dev
log() { echo "bench-isolation: $(date -u +%T) $*" >&2; }

ctrd_version=$(cd hack/tools/containerd && go list -m -f '{{.Version}}' github.com/containerd/containerd/v2)
ctr=$cache/containerd-$ctrd_version/bin/ctr

# The image: a Debian root filesystem with what postgresql-15 and stress-ng
# install (mmdebstrap, cached), plus the workload binary for the probe.
rootfs=$cache/bench-rootfs-bookworm-1/rootfs.tar
if [ ! -f "$rootfs" ]; then
  log "building the PostgreSQL root filesystem (mmdebstrap bookworm: postgresql-15 stress-ng)"
  rm -rf "$(dirname "$rootfs").tmp" && mkdir -p "$(dirname "$rootfs").tmp"
  mmdebstrap --quiet --variant=minbase --include=postgresql-15,stress-ng \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' bookworm "$(dirname "$rootfs").tmp/rootfs.tar"
  rm -rf "$(dirname "$rootfs")" && mv "$(dirname "$rootfs").tmp" "$(dirname "$rootfs")"
fi
mkdir -p "$out"
go run ./hack/images --bin bin --out "$out" --only-bench --bench-base "$rootfs" >&2
go build -o "$out/isostat" ./hack/isostat

eval "$(hack/cluster.sh env)"
started_cluster=false
if ! kubectl get node "$node" >/dev/null 2>&1; then
  log "no cluster up: bringing one up (hack/cluster.sh up)"
  hack/cluster.sh up
  started_cluster=true
fi
log "importing $image"
"$ctr" --address "$dir/containerd.sock" -n k8s.io images import --no-unpack=false "$out/bench-postgres.tar" >/dev/null

# What this run changes, and puts back on every exit.
kubelet_changed=false
corepin_off=false
old_policy=$(kubectl get node "$node" -o jsonpath='{.metadata.annotations.corepin\.io/node-policy}')
restore() {
  set +e
  log "restoring the cluster"
  unconfine_host
  kubectl delete namespace "$ns" --wait=true --timeout 120s >/dev/null 2>&1
  if $kubelet_changed; then kubelet_policy none; fi
  if $corepin_off; then corepin_on; fi
  if [ -n "$old_policy" ]; then
    kubectl annotate node "$node" --overwrite corepin.io/node-policy="$old_policy" >/dev/null
  else
    kubectl annotate node "$node" corepin.io/node-policy- >/dev/null 2>&1
  fi
  if $started_cluster; then hack/cluster.sh down; fi
}
trap restore EXIT

# The host's own processes (on this VM: other sessions' builds, the bed's
# daemons) are moved, for the run, into a cpuset of CPU 1, the CPU that is
# not the database's in any exclusive row: a node whose system daemons keep
# to their own CPUs. Every row runs under the same confinement; without it
# the rows measure the host's compile jobs (BENCH_CONFINE_HOST=0 to compare).
# Swept again before each measurement for processes started meanwhile.
host_cg=/sys/fs/cgroup/cpuset/corepin-bench-host
root_cg=/sys/fs/cgroup/cpuset
confine_host() {
  [ "${BENCH_CONFINE_HOST:-1}" = 1 ] || return 0
  if [ ! -d "$host_cg" ]; then
    mkdir "$host_cg"
    cat "$root_cg/cpuset.mems" > "$host_cg/cpuset.mems"
    echo 1 > "$host_cg/cpuset.cpus"
  fi
  local pid
  # Kernel threads refuse to move; everything else follows its process.
  for pid in $(cat "$root_cg/cgroup.procs"); do echo "$pid" > "$host_cg/cgroup.procs" 2>/dev/null || true; done
}
unconfine_host() {
  [ -d "$host_cg" ] || return 0
  local pid
  for _ in 1 2 3; do
    for pid in $(cat "$host_cg/cgroup.procs"); do echo "$pid" > "$root_cg/cgroup.procs" 2>/dev/null || true; done
  done
  rmdir "$host_cg" 2>/dev/null || log "could not remove $host_cg: $(wc -l < "$host_cg/cgroup.procs") processes left in it"
}
unconfine_host

# On 2 CPUs the defaults (sharedHeadroom 2, sharedOvercommit 2) leave no
# exclusive CPU beside noise whose limits add up past the machine; an
# operator's override for the bench, removed at the end. S is the noise's 4
# CPUs plus corepin's own pods' requests (0.12), so an overcommit of 4 would
# leave ceil(4.12/4) = 2 and no exclusive CPU: 6 keeps one.
kubectl annotate node "$node" --overwrite corepin.io/node-policy='{"sharedOvercommit": 6, "sharedHeadroom": 0}' >/dev/null
kubectl create namespace "$ns" >/dev/null 2>&1 || true
for _ in $(seq 60); do kubectl -n "$ns" get serviceaccount default >/dev/null 2>&1 && break; sleep 1; done

# kubelet_policy none|static: the kubelet restarted with that CPU manager
# policy (static with CPU 1 reserved for the system, so that the kubelet pins
# the database on CPU 0, where corepin's extender puts it: both exclusive rows
# use the same CPU and the same IO-queue interrupts), its checkpoint of the
# other policy removed (the kubelet refuses to start on it).
kubelet_policy() {
  local policy=$1
  [ -f "$dir/kubelet.yaml.bench-orig" ] || cp "$dir/kubelet.yaml" "$dir/kubelet.yaml.bench-orig"
  if [ "$policy" = static ]; then
    sed 's/^cpuManagerPolicy: none$/cpuManagerPolicy: static\nreservedSystemCPUs: "1"/' "$dir/kubelet.yaml.bench-orig" > "$dir/kubelet.yaml"
    kubelet_changed=true
  else
    cp "$dir/kubelet.yaml.bench-orig" "$dir/kubelet.yaml" && rm -f "$dir/kubelet.yaml.bench-orig"
    kubelet_changed=false
  fi
  rm -f "$dir/kubelet/cpu_manager_state"
  hack/cluster.sh restart kubelet
  for _ in $(seq 120); do curl -sf http://127.0.0.1:10248/healthz >/dev/null && break; sleep 0.5; done
  wait_node_ready
  log "kubelet: cpuManagerPolicy $policy"
}

wait_node_ready() {
  for _ in $(seq 120); do
    [ "$(kubectl get node "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ] && return 0
    sleep 1
  done
  log "node $node not Ready"; return 1
}

# corepin_off_now: the static rows run without corepin: corepin-nri's
# DaemonSet deleted and corepin-scheduler scaled to none (the static policy
# leaves 1 allocatable CPU, all of it the database's request).
corepin_off_now() {
  kubectl -n corepin-system delete daemonset corepin-nri --wait=true >/dev/null
  kubectl -n corepin-system scale deployment corepin-scheduler --replicas 0 >/dev/null
  kubectl -n corepin-system wait --for=delete pod -l app.kubernetes.io/name=corepin-nri --timeout 60s >/dev/null 2>&1 || true
  kubectl -n corepin-system wait --for=delete pod -l app.kubernetes.io/name=corepin-scheduler --timeout 60s >/dev/null 2>&1 || true
  corepin_off=true
  log "corepin off (corepin-nri deleted, corepin-scheduler scaled to 0)"
}

corepin_on() {
  kubectl apply -k deploy/local >/dev/null
  kubectl -n corepin-system rollout status ds/corepin-nri --timeout 120s >/dev/null
  kubectl -n corepin-system rollout status deployment/corepin-scheduler --timeout 120s >/dev/null
  corepin_off=false
  log "corepin on"
}

# pod NAME MODE CPU MEMORY CMD: a pod of the bench image. MODE corepin: an
# exclusive pod through corepin-scheduler; shared: a shared pod; static:
# Guaranteed through the default scheduler (the kubelet's static policy
# pins it). Requests equal limits except for the noise: requests 0, so that
# it schedules beside a Guaranteed database on the 1 allocatable CPU the
# static policy leaves; its limits (what corepin counts in S) add up past
# the machine.
pod() {
  local name=$1 mode=$2 cpu=$3 mem=$4 cmd=$5 annotations="{}" sched=default-scheduler req=$3
  case $mode in
    corepin) annotations='{corepin.io/cpu-mode: exclusive}'; sched=corepin-scheduler ;;
    noise) req=0 ;;
  esac
  kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $name
  namespace: $ns
  annotations: $annotations
spec:
  schedulerName: $sched
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: main
    image: $image
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", $(printf '%s' "$cmd" | jq -Rs .)]
    resources:
      requests: {cpu: "$req", memory: $mem}
      limits: {cpu: "$cpu", memory: $mem}
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, emptyDir: {medium: Memory, sizeLimit: 400Mi}}]
EOF
}

delete() { kubectl -n "$ns" delete pod "$@" --wait=true --timeout 90s >/dev/null; }

cpus_of() { kubectl -n "$ns" exec "$1" -- /workload status 2>/dev/null | awk '/Cpus_allowed_list/ {print $2}'; }

# The noise: two shared pods of two stress-ng CPU workers each, limits 2
# CPUs each (4 on a 2-CPU machine).
noise_on() {
  pod noise-1 noise 2 64Mi "exec stress-ng --cpu 2 --timeout 0 --quiet"
  pod noise-2 noise 2 64Mi "exec stress-ng --cpu 2 --timeout 0 --quiet"
  kubectl -n "$ns" wait --for=condition=Ready pod/noise-1 pod/noise-2 --timeout 120s >/dev/null
  sleep 2
  log "noise running on $(cpus_of noise-1)"
}
noise_off() { delete noise-1 noise-2 --ignore-not-found; }

# The database: initdb on a memory-backed emptyDir (the disk of a shared VM
# is not what is measured), postgres as the postgres user, pgbench's tables
# at scale $scale. pgbench runs by exec in the same container, so on the
# database's CPUs.
pg=/usr/lib/postgresql/15/bin
db_script="set -e
mkdir -p /var/run/postgresql /data/pg && chown postgres /var/run/postgresql /data/pg
setpriv --reuid=postgres --regid=postgres --init-groups $pg/initdb -D /data/pg -U postgres -A trust >/dev/null
exec setpriv --reuid=postgres --regid=postgres --init-groups $pg/postgres -D /data/pg \
  -c listen_addresses='' -c unix_socket_directories=/var/run/postgresql -c shared_buffers=128MB -c max_connections=20 -c max_wal_size=64MB -c min_wal_size=32MB"
db_up() {
  local name=$1 mode=$2
  pod "$name" "$mode" 1 768Mi "$db_script"
  kubectl -n "$ns" wait --for=condition=Ready "pod/$name" --timeout 120s >/dev/null
  for _ in $(seq 60); do kubectl -n "$ns" exec "$name" -- $pg/pg_isready -q -h /var/run/postgresql 2>/dev/null && break; sleep 1; done
  kubectl -n "$ns" exec "$name" -- $pg/pgbench -h /var/run/postgresql -U postgres -i -q -s "$scale" postgres >/dev/null 2>&1
  # A discarded warm-up: the first run after initdb was 30-40% slower than
  # the next in every row (cold catalog caches, the hint bits of the fresh
  # tables), which would charge whichever row comes first.
  kubectl -n "$ns" exec "$name" -- $pg/pgbench -h /var/run/postgresql -U postgres -c 2 -j 1 -T 5 postgres >/dev/null 2>&1
  log "$name ($mode) up on CPUs $(cpus_of "$name")"
}

# run ROW WORKLOAD ROUND DB: pgbench -T $secs, 2 clients, one thread, every
# transaction logged; the percentiles come from the log.
results=$out/results.jsonl
run() {
  local row=$1 workload=$2 round=$3 db=$4 flags="-S -n" raw tps
  [ "$workload" = tpcb ] && flags=""
  raw=$out/raw/$row-$workload-$round.log
  mkdir -p "$out/raw"
  confine_host
  tps=$(kubectl -n "$ns" exec "$db" -- sh -c "cd /tmp && rm -f pgbench_log.* && $pg/pgbench -h /var/run/postgresql -U postgres $flags -c 2 -j 1 -T $secs --log postgres 2>&1" |
    awk '/^tps = .*without initial connection time/ {print $3}')
  kubectl -n "$ns" exec "$db" -- sh -c 'cat /tmp/pgbench_log.*' > "$raw"
  "$out/isostat" pgbench --row "$row" --workload "$workload" --round "$round" --tps "${tps:-0}" "$raw" | tee -a "$results" >&2
}

# probe CASE MODE ROUND: the start-up window probe as an exclusive
# container's first process; its worst iteration over $probe_secs.
probe() {
  local case=$1 mode=$2 round=$3 name=probe-$1-$3
  confine_host
  pod "$name" "$mode" 1 64Mi "exec /workload spin ${probe_secs}s"
  if ! kubectl -n "$ns" wait --for=jsonpath='{.status.phase}'=Succeeded "pod/$name" --timeout 90s >/dev/null; then
    log "probe $name did not finish: $(kubectl -n "$ns" get pod "$name" -o jsonpath='{.status.phase}')"
    kubectl -n "$ns" get events --field-selector involvedObject.name="$name" >&2
    exit 1
  fi
  [ "$mode" = corepin ] && log "probe $name: $(kubectl -n "$ns" get pod "$name" -o jsonpath='{.metadata.annotations.corepin\.io/alloc-status}')"
  kubectl -n "$ns" logs "$name" | tail -n 1 |
    jq -c --arg row "$case" --argjson round "$round" \
      '{row: $row, workload: "startup", round: $round, tps: 0, p50_ms: 0, p99_ms: 0, p999_ms: 0, transactions: .iterations, worst_ms, worst_at_ms, median_ms}' |
    tee -a "$results" >&2
  delete "$name"
}

: > "$results"
log "$rounds rounds, pgbench scale $scale, ${secs}s per run, on $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); load average $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$rounds"); do
  log "round $round: corepin"
  probe alone corepin "$round"
  db_up db corepin
  run alone ro "$round" db
  run alone tpcb "$round" db
  noise_on
  run corepin_noisy ro "$round" db
  run corepin_noisy tpcb "$round" db
  kubectl -n "$ns" annotate pod db corepin.io/release-isolate-mode=true >/dev/null
  sleep 2
  log "released: db on CPUs $(cpus_of db)"
  run release_on ro "$round" db
  kubectl -n "$ns" annotate pod db corepin.io/release-isolate-mode- >/dev/null
  sleep 2
  log "pinned again: db on CPUs $(cpus_of db)"
  run release_off ro "$round" db
  delete db
  probe corepin corepin "$round"

  log "round $round: shared"
  db_up db shared
  run shared_noisy ro "$round" db
  run shared_noisy tpcb "$round" db
  delete db
  noise_off

  log "round $round: static"
  corepin_off_now
  kubelet_policy static
  noise_on
  probe static static "$round"
  db_up db static
  run static_noisy ro "$round" db
  run static_noisy tpcb "$round" db
  delete db
  noise_off
  kubelet_policy none
  corepin_on
done

log "done; load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$out/isostat" summary "$results" | tee "$out/summary.txt"
