//go:build tools

// Package containerdtools pins the containerd the node plugin's integration
// tests run; hack/tools-containerd.sh builds it.
package containerdtools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
