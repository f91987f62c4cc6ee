#!/usr/bin/env bash
# Builds a kind node image without any registry (`make kind-image`): what
# `kind build node-image` puts in, from what this machine can build:
# a Debian rootfs (mmdebstrap), kind's own base files taken from the kind
# module, the project's containerd build with NRI on, kubeadm/kubelet/kubectl,
# and every image kubeadm deploys, laid out like the public ones and
# pre-imported into the node's containerd.
#
# The image is tagged by Kubernetes, containerd and kind version and kept in
# Docker's store; a second run with the same versions does nothing. Prints
# the image's name on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
cache=${COREPIN_CACHE:-$HOME/.cache/corepin}
log() { echo "kind-image: $*" >&2; }

kind_version=${KIND_VERSION:-v0.33.0}
kube_version=${KUBERNETES_VERSION:-$(cd hack/tools/kube && go list -m -f '{{.Version}}' k8s.io/kubernetes)}
ctrd_version=${CONTAINERD_VERSION:-$(cd hack/tools/containerd && go list -m -f '{{.Version}}' github.com/containerd/containerd/v2)}
etcd_version=$(cd hack/tools/etcd && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
coredns_version=$(cd hack/tools/coredns && go list -m -f '{{.Version}}' github.com/coredns/coredns)
cni_version=$(cd hack/tools/cni && go list -m -f '{{.Version}}' github.com/containernetworking/plugins)
image=${KIND_IMAGE:-corepin/kind-node:$kube_version-containerd-$ctrd_version-kind-$kind_version}

if docker image inspect "$image" >/dev/null 2>&1; then
  log "cached: $image"
  echo "$image"
  exit 0
fi

kube_bin=$cache/kube-$kube_version/bin
ctrd_bin=$cache/containerd-$ctrd_version/bin
etcd_bin=$cache/etcd-$etcd_version/bin
coredns_bin=$cache/coredns-$coredns_version/bin
cni_bin=$cache/cni-$cni_version/bin
crictl_bin=$cache/crictl-${CRICTL_VERSION:-v1.37.0}/bin
kind_files=$(go env GOMODCACHE)/sigs.k8s.io/kind@$kind_version/images/base/files
for f in "$kube_bin/kubeadm" "$kube_bin/kube-proxy" "$ctrd_bin/containerd" "$etcd_bin/etcd" \
  "$coredns_bin/coredns" "$cni_bin/ptp" "$crictl_bin/crictl" "$kind_files/usr/local/bin/entrypoint" "bin/workload"; do
  [ -e "$f" ] || { log "missing $f (make tools tools-kind build images)"; exit 1; }
done
command -v mmdebstrap >/dev/null || {
  log "installing mmdebstrap"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null
}

# The tags kubeadm will ask for: the images must be there under exactly
# these names, or the node would try to pull. etcd and CoreDNS are tagged
# with what they are; where kubeadm's defaults differ (another Kubernetes
# than the tools pin), hack/kind.sh sets kubeadm's imageTag for them.
declare -A tag
while read -r ref; do
  name=${ref%:*}
  tag[${name##*/}]=${ref##*:}
done < <("$kube_bin/kubeadm" config images list --kubernetes-version "$kube_version")
etcd_tag=${etcd_version#v}-0
[ "${tag[etcd]}" = "$etcd_tag" ] || log "note: kubeadm $kube_version deploys etcd ${tag[etcd]} by default; the image holds $etcd_tag (kind.sh sets etcd.local.imageTag)"
[ "${tag[coredns]}" = "$coredns_version" ] || log "note: kubeadm $kube_version deploys coredns ${tag[coredns]} by default; the image holds $coredns_version (kind.sh sets dns.imageTag)"

# Debian roots, cached: the node's, and kube-proxy's (iptables and friends).
rootfs_dir=$cache/kind-rootfs-bookworm-1
if [ ! -f "$rootfs_dir/.complete" ]; then
  rm -rf "$rootfs_dir" && mkdir -p "$rootfs_dir"
  log "building the node's Debian rootfs (about a minute)"
  mmdebstrap --quiet --variant=minbase \
    --include=systemd,systemd-sysv,dbus,conntrack,iptables,nftables,iproute2,ethtool,util-linux,mount,kmod,libseccomp2,pigz,bash,ca-certificates,procps,runc,jq,e2fsprogs \
    bookworm "$rootfs_dir/node.tar"
  log "building kube-proxy's rootfs"
  mmdebstrap --quiet --variant=minbase --include=iptables,nftables,conntrack,iproute2,kmod,ipset \
    --customize-hook='rm -rf "$1"/var/cache/apt "$1"/var/lib/apt/lists "$1"/usr/share/doc "$1"/usr/share/man' \
    bookworm "$rootfs_dir/kube-proxy-base.tar"
  touch "$rootfs_dir/.complete"
fi

work=$(mktemp -d /var/tmp/corepin-kind-image.XXXXXX)
ctrd_pid=""
cleanup() { # runs under set -e: nothing in it may fail, or the script's status is lost
  if [ -n "$ctrd_pid" ]; then kill "$ctrd_pid" 2>/dev/null || true; wait "$ctrd_pid" 2>/dev/null || true; fi
  { grep -o " $work[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
root=$work/rootfs
mkdir -p "$root"
tar -C "$root" -xf "$rootfs_dir/node.tar"

log "kind $kind_version's base files"
install -m 0755 "$kind_files"/usr/local/bin/* "$root/usr/local/bin/"
mkdir -p "$root/kind/bin" "$root/etc/containerd" "$root/etc/default" "$root/etc/sysctl.d" \
  "$root/etc/systemd/system/kubelet.service.d" "$root/etc/kubernetes/manifests" "$root/kind/manifests" "$root/opt/cni/bin"
install -m 0644 "$kind_files"/kind/README.txt "$root/kind/"
install -m 0755 "$kind_files"/kind/bin/* "$root/kind/bin/"
install -m 0644 "$kind_files"/etc/crictl.yaml "$root/etc/"
install -m 0644 "$kind_files"/etc/containerd/* "$root/etc/containerd/"
install -m 0644 "$kind_files"/etc/default/* "$root/etc/default/"
install -m 0644 "$kind_files"/etc/sysctl.d/* "$root/etc/sysctl.d/"
find "$kind_files/etc/systemd/system" -maxdepth 1 -type f -exec install -m 0644 {} "$root/etc/systemd/system/" \;
install -m 0644 "$kind_files"/etc/systemd/system/kubelet.service.d/* "$root/etc/systemd/system/kubelet.service.d/"
# What kind's Dockerfile does to systemd: nothing starts but what a node needs.
find "$root/lib/systemd/system/sysinit.target.wants/" -name systemd-tmpfiles-setup.service -delete
rm -f "$root"/lib/systemd/system/multi-user.target.wants/* "$root"/etc/systemd/system/*.wants/* \
  "$root"/lib/systemd/system/local-fs.target.wants/* "$root"/lib/systemd/system/sockets.target.wants/*udev* \
  "$root"/lib/systemd/system/sockets.target.wants/*initctl* "$root"/lib/systemd/system/basic.target.wants/*
echo "ReadKMsg=no" >> "$root/etc/systemd/journald.conf"
ln -sf /usr/lib/systemd/systemd "$root/sbin/init"

log "containerd $ctrd_version with NRI, Kubernetes $kube_version, CNI $cni_version"
install -m 0755 "$ctrd_bin"/{containerd,containerd-shim-runc-v2,ctr} "$crictl_bin/crictl" "$root/usr/local/bin/"
install -m 0755 "$kube_bin"/{kubeadm,kubelet,kubectl} "$root/usr/bin/"
install -m 0755 "$cni_bin"/{host-local,loopback,ptp,portmap,bridge} "$root/opt/cni/bin/"
echo "$kube_version" > "$root/kind/version"
"$ctrd_bin/ctr" oci spec \
  | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {"path": "/kind/bin/mount-product-files.sh"}' \
  | jq 'del(.process.rlimits)' > "$root/etc/containerd/cri-base.json"
# kubeadm's pause; runc may not lower oom_score_adj in some VMs (this one);
# NRI on, where corepin-nri connects.
sed -i "s|sandbox_image = \"registry.k8s.io/pause:[^\"]*\"|sandbox_image = \"registry.k8s.io/pause:${tag[pause]}\"|; s|restrict_oom_score_adj = false|restrict_oom_score_adj = true|" \
  "$root/etc/containerd/config.toml"
grep -q "pause:${tag[pause]}" "$root/etc/containerd/config.toml" || { log "kind's config.toml has no sandbox_image line to set"; exit 1; }
cat >> "$root/etc/containerd/config.toml" <<'EOF'

# corepin: NRI on (containerd 2.x), where corepin-nri connects.
[plugins."io.containerd.nri.v1.nri"]
  disable = false
  socket_path = "/var/run/nri/nri.sock"
  plugin_registration_timeout = "5s"
  plugin_request_timeout = "2s"
EOF

# Pod network without kindnetd (not on the module proxy): each node's pods
# get 10.244.N.0/24, N the last octet of the node's address, and a route to
# every other node's range through that node, set before the kubelet starts.
install -m 0755 /dev/stdin "$root/kind/bin/corepin-pod-network.sh" <<'EOF'
#!/bin/bash
set -eu
addr=$(ip -4 -o addr show dev eth0 | awk '{print $4}' | head -1)
ip=${addr%/*}; prefix=${ip%.*}; n=${ip##*.}
mkdir -p /etc/cni/net.d
cat > /etc/cni/net.d/10-corepin-pods.conflist <<CONF
{"cniVersion": "1.0.0", "name": "corepin-pods", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.$n.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
CONF
for m in $(seq 1 254); do
  [ "$m" = "$n" ] || ip route replace "10.244.$m.0/24" via "$prefix.$m" dev eth0 onlink 2>/dev/null || true
done
iptables -t nat -C POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 ! -o cni0 -j MASQUERADE 2>/dev/null ||
  iptables -t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 ! -o cni0 -j MASQUERADE
EOF
cat > "$root/etc/systemd/system/corepin-pod-network.service" <<'EOF'
[Unit]
Description=corepin: this node's pod range and routes to the other nodes' (no kindnetd offline)
After=network.target
Before=kubelet.service containerd.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/kind/bin/corepin-pod-network.sh

[Install]
WantedBy=multi-user.target
EOF
# No dynamic provisioner offline: a default StorageClass kind would
# otherwise fill with local-path-provisioner, whose image is not here.
cat > "$root/kind/manifests/default-storage.yaml" <<'EOF'
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
EOF
chroot "$root" systemctl enable kubelet.service containerd.service undo-mount-hacks.service corepin-pod-network.service >/dev/null 2>&1
chroot "$root" systemctl mask systemd-binfmt.service >/dev/null 2>&1

log "images kubeadm deploys, in the public layout"
go run ./hack/images --bin bin --out "$work/images" --kind --kube-bin "$kube_bin" --kube-version "$kube_version" \
  --etcd "$etcd_bin/etcd" --etcd-tag "$etcd_tag" --coredns "$coredns_bin/coredns" --coredns-tag "$coredns_version" \
  --pause-tag "${tag[pause]}" --proxy-base "$rootfs_dir/kube-proxy-base.tar" >/dev/null
# Imported into the node's own containerd store, pinned, the way kind's
# node-image build leaves them; containerd runs here on that store.
mkdir -p "$work/state"
cat > "$work/containerd.toml" <<EOF
version = 3
root = "$root/var/lib/containerd"
state = "$work/state"
[grpc]
  address = "$work/containerd.sock"
[plugins."io.containerd.nri.v1.nri"]
  disable = true
EOF
"$ctrd_bin/containerd" --config "$work/containerd.toml" >"$work/containerd.log" 2>&1 &
ctrd_pid=$!
for _ in $(seq 60); do "$ctrd_bin/ctr" --address "$work/containerd.sock" version >/dev/null 2>&1 && break; sleep 0.5; done
for img in "$work"/images/*.tar; do
  case $(basename "$img") in corepin-*) continue ;; esac
  "$ctrd_bin/ctr" --address "$work/containerd.sock" -n k8s.io images import --label io.cri-containerd.pinned=pinned \
    --all-platforms "$img" >/dev/null
done
"$ctrd_bin/ctr" --address "$work/containerd.sock" -n k8s.io images ls -q >&2
kill "$ctrd_pid"; wait "$ctrd_pid" 2>/dev/null || true; ctrd_pid=""

log "writing $image"
tar -C "$root" --numeric-owner -c . | docker import - "$image-rootfs" >/dev/null
mkdir -p "$work/context"
cat > "$work/context/Dockerfile" <<EOF
FROM $image-rootfs
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
EOF
DOCKER_BUILDKIT=0 docker build -q -t "$image" "$work/context" >/dev/null
docker rmi "$image-rootfs" >/dev/null 2>&1 || true
log "built $image"
echo "$image"
