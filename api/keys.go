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
)

// Labels consulted for the app identity when corepin.io/app is absent, in order.
const (
	LabelAppName = "app.kubernetes.io/name"
	LabelApp     = "app"
)
