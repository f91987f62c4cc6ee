package api

// Pod annotations set by users.
const (
	AnnotationCPUMode              = "corepin.io/cpu-mode"
	AnnotationAllocSpec            = "corepin.io/alloc-spec"
	AnnotationMaxPerNode           = "corepin.io/max-per-node"
	AnnotationApp                  = "corepin.io/app"
	AnnotationReleaseIsolateMode   = "corepin.io/release-isolate-mode"
	AnnotationExcludeReserveCPUSet = "corepin.io/exclude-reserve-cpuset"
)

// AnnotationAllocStatus is written on the pod by the scheduler extender
// before the pod is bound; users never write it.
const AnnotationAllocStatus = "corepin.io/alloc-status"

// Node annotations.
const (
	// AnnotationTopology is published by the node plugin.
	AnnotationTopology = "corepin.io/topology"
	// AnnotationNodePolicy is optional and set by operators.
	AnnotationNodePolicy = "corepin.io/node-policy"
	// AnnotationSharedPool is published by the node plugin (status only).
	AnnotationSharedPool = "corepin.io/shared-pool"
	// AnnotationNodeAttention is set by the extender when a node's topology
	// changed incompatibly; it carries the reason for operators.
	AnnotationNodeAttention = "corepin.io/attention"
	// AnnotationReleaseAll ("true") is set by operators, or the chart's
	// pre-delete hook, to uninstall corepin from a node: its plugin gives
	// every container the whole node and stops pinning until it is removed.
	// Not in the contract (docs/annotations.md).
	AnnotationReleaseAll = "corepin.io/release-all"
	// AnnotationReleaseAllDone is written by the node plugin (an RFC 3339
	// time) once every container it knows runs on the whole node under
	// release-all; it is removed while that is not so.
	AnnotationReleaseAllDone = "corepin.io/release-all-done"
)

// Labels consulted for the app identity when corepin.io/app is absent, in order.
const (
	LabelAppName = "app.kubernetes.io/name"
	LabelApp     = "app"
)

// AnnotationReservation, set by users on a pod, names the CPUReservation
// (same namespace) the pod consumes (contract section 7).
const AnnotationReservation = "corepin.io/reservation"
