#!/usr/bin/env bash
# A Docker engine for the kind test bed, on machines without systemd.
#
#   hack/docker.sh ensure   install Debian's docker.io when there is no dockerd,
#                           start dockerd when it is not running (with the
#                           runc wrapper only where a privileged container fails)
#   hack/docker.sh stop     stop dockerd if `ensure` started it
#
# State (pid, log, the wrapper) lives in $COREPIN_DOCKER_DIR.
set -euo pipefail
state=${COREPIN_DOCKER_DIR:-/var/lib/corepin-docker}
pidfile=$state/dockerd.pid
log() { echo "docker: $*" >&2; }

running() { docker info >/dev/null 2>&1; }

install() {
  command -v dockerd >/dev/null 2>&1 && command -v jq >/dev/null 2>&1 && return
  log "no Docker engine: installing Debian's docker.io"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq docker.io jq >/dev/null
}

# The capability bounding set of some VMs lacks capabilities that runc asks
# for on every privileged container ("unable to apply caps: operation not
# permitted"); this wrapper drops those the bounding set does not have from
# the bundle's config.json and from `runc exec --process FILE`.
write_wrapper() {
  mkdir -p "$state"
  cat > "$state/runc-wrapper" <<'WRAP'
#!/bin/bash
# Drops from runc's capability lists what this machine's bounding set lacks.
missing=$(cat /var/lib/corepin-docker/missing-caps 2>/dev/null)
strip() {
  [ -n "$missing" ] && [ -f "$1" ] || return 0
  local filter="." c
  for c in $missing; do
    filter="$filter | walk(if type == \"array\" then map(select(. != \"$c\")) else . end)"
  done
  jq -c "$filter" "$1" > "$1.corepin" && mv "$1.corepin" "$1"
}
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --bundle|-b) strip "${args[i+1]}/config.json" ;;
    --bundle=*) strip "${args[i]#--bundle=}/config.json" ;;
    --process|-p) strip "${args[i+1]}" ;;
    --process=*) strip "${args[i]#--process=}" ;;
  esac
done
exec /usr/sbin/runc "$@"
WRAP
  sed -i "s|/var/lib/corepin-docker|$state|" "$state/runc-wrapper"
  chmod +x "$state/runc-wrapper"
}

# missing_caps: the capabilities docker grants privileged containers that
# this process's bounding set lacks, in runc's CAP_ names.
missing_caps() {
  local bnd; bnd=$(awk '/^CapBnd/ {print $2}' /proc/self/status)
  local names=(CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP LINUX_IMMUTABLE
    NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER SYS_MODULE SYS_RAWIO SYS_CHROOT
    SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE
    AUDIT_WRITE AUDIT_CONTROL SETFCAP MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ
    PERFMON BPF CHECKPOINT_RESTORE)
  local i out=""
  for i in "${!names[@]}"; do
    (( (0x$bnd >> i) & 1 )) || out+="CAP_${names[i]} "
  done
  echo "$out"
}

start_dockerd() { # extra dockerd args...
  mkdir -p "$state"
  log "starting dockerd (log: $state/dockerd.log)"
  # Debian's containerd shim must not be found before another build on PATH.
  setsid dockerd --host unix:///var/run/docker.sock "$@" >>"$state/dockerd.log" 2>&1 </dev/null &
  echo $! > "$pidfile"
  for _ in $(seq 120); do running && return 0; sleep 0.5; done
  log "dockerd did not answer within 60 s; its log:"
  tail -n 30 "$state/dockerd.log" >&2
  stop
  return 1
}

# probe_image: a tiny local image to try a privileged container with (no
# registry here): the busybox-free way, an image of one static binary.
probe_privileged() {
  local img=corepin/privileged-probe:1
  if ! docker image inspect "$img" >/dev/null 2>&1; then
    local dir; dir=$(mktemp -d)
    cp "$(command -v docker-init)" "$dir/init"
    tar -C "$dir" -c init | docker import --change 'ENTRYPOINT ["/init","--","/init","--version"]' - "$img" >/dev/null
    rm -rf "$dir"
  fi
  docker run --rm --privileged "$img" >/dev/null 2>&1
}

ensure() {
  install
  if running; then
    log "Docker engine already running: $(docker version --format '{{.Server.Version}}' 2>/dev/null)"
    probe_privileged || { log "privileged containers fail on the running engine; restart it with hack/docker.sh stop && hack/docker.sh ensure"; return 1; }
    return 0
  fi
  [ -d "$state" ] && rm -f "$pidfile"
  start_dockerd
  if ! probe_privileged; then
    local missing; missing=$(missing_caps)
    log "privileged containers fail here; the bounding set lacks: ${missing:-nothing?}. Using a runc wrapper that drops them"
    stop
    write_wrapper
    echo "$missing" > "$state/missing-caps"
    start_dockerd --add-runtime "corepin-runc=$state/runc-wrapper" --default-runtime corepin-runc
    probe_privileged || { log "privileged containers still fail with the wrapper; see $state/dockerd.log"; stop; return 1; }
  fi
  # dockerd sets the FORWARD policy to DROP, which cuts the local cluster's
  # bridge network off; kind's nodes do not need it dropped.
  iptables -P FORWARD ACCEPT 2>/dev/null || true
  log "Docker engine $(docker version --format '{{.Server.Version}}') ready"
}

stop() {
  [ -f "$pidfile" ] || { log "dockerd was not started by hack/docker.sh: left alone"; return 0; }
  local pid; pid=$(cat "$pidfile")
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
    rm -f "$pidfile"; log "dockerd (pid $pid) is no longer running"; return 0
  fi
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
  iptables -P FORWARD ACCEPT 2>/dev/null || true
  log "dockerd stopped"
}

case "${1:-}" in
  ensure) ensure ;;
  stop) stop ;;
  *) echo "usage: $0 ensure|stop" >&2; exit 2 ;;
esac
