//go:build tools

// Package etcdtools pins the etcd server the integration tests run.
package etcdtools

import _ "go.etcd.io/etcd/server/v3"
