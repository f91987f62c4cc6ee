package framework

import (
	"runtime"
	"testing"

	"k8s.io/utils/cpuset"
)

// HostCPUs is this machine's CPUs as the tests on a real containerd split
// them: the last one for an exclusive container, the rest the shared pool.
type HostCPUs struct {
	N         int
	All       cpuset.CPUSet
	Exclusive cpuset.CPUSet
	Pool      cpuset.CPUSet
}

// SplitHostCPUs splits this machine's CPUs, skipping the test on a machine
// of fewer than 2 (nothing to split).
func SplitHostCPUs(t testing.TB) HostCPUs {
	t.Helper()
	n := runtime.NumCPU()
	if n < 2 {
		t.Skip("needs at least 2 CPUs")
	}
	ids := make([]int, n)
	for i := range ids {
		ids[i] = i
	}
	h := HostCPUs{N: n, All: cpuset.New(ids...), Exclusive: cpuset.New(n - 1)}
	h.Pool = h.All.Difference(h.Exclusive)
	return h
}
