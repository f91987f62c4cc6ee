//go:build tools

// Package helmtools pins the helm CLI that renders and lints the chart in
// deploy/chart (make test-chart); hack/tools-helm.sh builds it.
package helmtools

import _ "helm.sh/helm/v3/cmd/helm"
