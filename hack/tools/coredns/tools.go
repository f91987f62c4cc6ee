//go:build tools

// Package corednstools pins the CoreDNS that the kind node image carries
// (the version kubeadm deploys); hack/tools-kind.sh builds it.
package corednstools

import _ "github.com/coredns/coredns"
