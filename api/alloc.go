package api

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"k8s.io/utils/cpuset"
)

// CPUMode is the value of corepin.io/cpu-mode.
type CPUMode string

const (
	ModeShared    CPUMode = "shared"
	ModeExclusive CPUMode = "exclusive"
)

// CPUPolicy is how exclusive CPUs are chosen (alloc-spec "cpu").
type CPUPolicy string

const (
	// SameCoreFirst fills whole physical cores before taking a partial core.
	SameCoreFirst CPUPolicy = "SameCoreFirst"
	// Spread takes at most one logical CPU per physical core.
	Spread CPUPolicy = "Spread"
	// BindAllCPUs pins to every online CPU and holds no exclusive CPUs.
	BindAllCPUs CPUPolicy = "BindAllCPUs"
)

// NUMAPolicy is how the chosen CPUs relate to NUMA nodes (alloc-spec "numa").
type NUMAPolicy string

const (
	NUMANone      NUMAPolicy = "None"
	NUMAPreferred NUMAPolicy = "Preferred"
	NUMARequired  NUMAPolicy = "Required"
)

// AllocSpec is the value of corepin.io/alloc-spec.
type AllocSpec struct {
	CPU           CPUPolicy  `json:"cpu,omitempty"`
	NUMA          NUMAPolicy `json:"numa,omitempty"`
	IOQueueSpread bool       `json:"ioQueueSpread,omitempty"`
	// Containers lists the containers that get exclusive CPUs. Nil means every
	// container whose CPU amount is a whole number.
	Containers []string `json:"containers,omitempty"`
}

// ParseAllocSpec parses corepin.io/alloc-spec strictly and fills defaults.
// An empty value is the default spec.
func ParseAllocSpec(value string) (AllocSpec, error) {
	spec := AllocSpec{}
	if strings.TrimSpace(value) != "" {
		if err := decodeStrict(AnnotationAllocSpec, value, &spec); err != nil {
			return AllocSpec{}, err
		}
	}
	switch spec.CPU {
	case "":
		spec.CPU = SameCoreFirst
	case SameCoreFirst, Spread, BindAllCPUs:
	default:
		return AllocSpec{}, fieldError(AnnotationAllocSpec, "cpu", strconv.Quote(string(spec.CPU)),
			"must be SameCoreFirst, Spread or BindAllCPUs")
	}
	switch spec.NUMA {
	case "":
		spec.NUMA = NUMAPreferred
	case NUMANone, NUMAPreferred, NUMARequired:
	default:
		return AllocSpec{}, fieldError(AnnotationAllocSpec, "numa", strconv.Quote(string(spec.NUMA)),
			"must be None, Preferred or Required")
	}
	seen := map[string]bool{}
	for _, c := range spec.Containers {
		if c == "" {
			return AllocSpec{}, fieldError(AnnotationAllocSpec, "containers", `""`, "container names must not be empty")
		}
		if seen[c] {
			return AllocSpec{}, fieldError(AnnotationAllocSpec, "containers", strconv.Quote(c), "container listed twice")
		}
		seen[c] = true
	}
	return spec, nil
}

// AllocStatus is the value of corepin.io/alloc-status: the CPUs the extender
// chose for an exclusive pod, as the node plugin enforces them.
type AllocStatus struct {
	Node string `json:"node"`
	// CPUs is the union of the exclusive containers' CPUs.
	CPUs CPUList `json:"cpus"`
	// Containers maps each exclusive container to its CPUs.
	Containers map[string]CPUList `json:"containers"`
	// Mems is the memory nodes for the exclusive containers; empty means the
	// runtime default (alloc-spec numa None).
	Mems CPUList `json:"mems"`
}

// String renders the annotation value; keys are sorted so the value is stable.
func (s AllocStatus) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, `{"node":%s,"cpus":%s,"containers":{`, strconv.Quote(s.Node), strconv.Quote(s.CPUs.Set().String()))
	names := make([]string, 0, len(s.Containers))
	for name := range s.Containers {
		names = append(names, name)
	}
	sort.Strings(names)
	for i, name := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%s", strconv.Quote(name), strconv.Quote(s.Containers[name].Set().String()))
	}
	fmt.Fprintf(&b, `},"mems":%s}`, strconv.Quote(s.Mems.Set().String()))
	return b.String()
}

// ParseAllocStatus parses corepin.io/alloc-status strictly and checks that it
// is self-consistent: a node, a non-empty CPU set, and containers whose CPUs
// are disjoint and together equal that set.
func ParseAllocStatus(value string) (AllocStatus, error) {
	var s AllocStatus
	if err := decodeStrict(AnnotationAllocStatus, value, &s); err != nil {
		return AllocStatus{}, err
	}
	if s.Node == "" {
		return AllocStatus{}, fieldError(AnnotationAllocStatus, "node", `""`, "must name the node")
	}
	all := s.CPUs.Set()
	if all.IsEmpty() {
		return AllocStatus{}, fieldError(AnnotationAllocStatus, "cpus", `""`, "must not be empty")
	}
	if len(s.Containers) == 0 {
		return AllocStatus{}, fieldError(AnnotationAllocStatus, "containers", "{}", "must list at least one container")
	}
	union := cpuset.New()
	names := make([]string, 0, len(s.Containers))
	for name := range s.Containers {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		cpus := s.Containers[name].Set()
		if name == "" || cpus.IsEmpty() {
			return AllocStatus{}, fieldError(AnnotationAllocStatus, "containers", fmt.Sprintf("%q: %q", name, cpus),
				"every container needs a name and a non-empty CPU list")
		}
		if overlap := union.Intersection(cpus); !overlap.IsEmpty() {
			return AllocStatus{}, fieldError(AnnotationAllocStatus, "containers", fmt.Sprintf("%q: %q", name, cpus),
				fmt.Sprintf("CPUs %s are given to two containers", overlap))
		}
		union = union.Union(cpus)
	}
	if !union.Equals(all) {
		return AllocStatus{}, fieldError(AnnotationAllocStatus, "cpus", strconv.Quote(all.String()),
			fmt.Sprintf("must equal the union of the containers' CPUs %q", union.String()))
	}
	s.CPUs = NewCPUList(all)
	s.Mems = NewCPUList(s.Mems.Set())
	return s, nil
}
