package plugin

// Another NRI plugin setting the same containers' cpusets. containerd/nri
// refuses a container that two plugins adjust the same field of
// (pkg/api/owners.go: `plugins "A" and "B" both tried to set CPUSetCPUs`);
// the error goes to the CRI caller, the kubelet, not to the plugins: NRI
// only undoes the creation (StopContainer, RemoveContainer). The kubelet
// puts the error in the container's waiting status (CreateContainerError),
// which the plugin sees in its watch of the node's pods.

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	v1 "k8s.io/api/core/v1"
	"k8s.io/utils/lru"
)

// registerPluginConflicts registers the conflicts counter in reg.
func registerPluginConflicts(reg *prometheus.Registry) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "corepin_nri_plugin_conflicts_total",
		Help: "Containers containerd refused because another NRI plugin set the same field (pod, container and plugin counted once), by field."},
		[]string{"field"})
	reg.MustRegister(c)
	return c
}

// ReasonCPUSetConflict is the node event's reason.
const ReasonCPUSetConflict = "CorepinCPUSetConflict"

// createContainerError is the kubelet's waiting reason for a failed CRI
// CreateContainer.
const createContainerError = "CreateContainerError"

// ownerConflict matches containerd/nri's FieldOwners.Conflict message.
var ownerConflict = regexp.MustCompile(`plugins "([^"]+)" and "([^"]+)" both tried to set (\S+)`)

// PluginConflict is one conflict a container's waiting status reports.
type PluginConflict struct {
	// Container is the container's name; Others the NRI plugins (as NRI
	// names them, INDEX-NAME) other than corepin's; Field the one both set.
	Container string
	Others    []string
	Field     string
}

// SetNRIName tells the plugin its own NRI name (INDEX-NAME, as NRI's
// messages name plugins), to tell itself from the other plugin of a
// conflict. Unset, a name containing "corepin" is taken for its own.
func (p *Plugin) SetNRIName(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nriName = name
}

// conflictsOf reads the NRI field conflicts in a pod's container statuses.
func conflictsOf(pod *v1.Pod, ours func(string) bool) []PluginConflict {
	var out []PluginConflict
	for _, s := range slices.Concat(pod.Status.InitContainerStatuses, pod.Status.ContainerStatuses) {
		w := s.State.Waiting
		if w == nil || w.Reason != createContainerError {
			continue
		}
		m := ownerConflict.FindStringSubmatch(w.Message)
		if m == nil {
			continue
		}
		c := PluginConflict{Container: s.Name, Field: m[3]}
		for _, name := range m[1:3] {
			if !ours(name) {
				c.Others = append(c.Others, name)
			}
		}
		if len(c.Others) > 0 {
			out = append(out, c)
		}
	}
	return out
}

// keepConflicts strips a pod's container statuses to the waiting ones that
// report an NRI field conflict (the pod watch keeps nothing else of the
// status).
func keepConflicts(statuses []v1.ContainerStatus) []v1.ContainerStatus {
	var kept []v1.ContainerStatus
	for _, s := range statuses {
		if w := s.State.Waiting; w != nil && w.Reason == createContainerError && ownerConflict.MatchString(w.Message) {
			kept = append(kept, v1.ContainerStatus{Name: s.Name, State: v1.ContainerState{Waiting: w.DeepCopy()}})
		}
	}
	return kept
}

// SeeConflicts reports, once per pod, container and other plugin, each NRI
// field conflict the pod's statuses show: a warning on this node (reason
// CorepinCPUSetConflict) and a log line, both naming the other plugin,
// the pod and the field. The kubelet retries the creation and rewrites the
// status each time; the report is made once.
func (p *Plugin) SeeConflicts(pod *v1.Pod) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(pod.Status.ContainerStatuses)+len(pod.Status.InitContainerStatuses) == 0 {
		return
	}
	ours := func(name string) bool {
		if p.nriName != "" {
			return name == p.nriName
		}
		return strings.Contains(name, "corepin")
	}
	if p.seenConflicts == nil {
		p.seenConflicts = lru.New(1024)
	}
	for _, c := range conflictsOf(pod, ours) {
		key := strings.Join([]string{string(pod.UID), c.Container, strings.Join(c.Others, ","), c.Field}, "/")
		if _, seen := p.seenConflicts.Get(key); seen {
			continue
		}
		p.seenConflicts.Add(key, struct{}{})
		others := `"` + strings.Join(c.Others, `" and "`) + `"`
		me := p.nriName
		if me == "" {
			me = "corepin"
		}
		p.log.Warn("Another NRI plugin sets the containers' CPUs: containerd refuses to create the container",
			"plugin", strings.Join(c.Others, ","), "field", c.Field, "pod", pod.Namespace+"/"+pod.Name, "container", c.Container)
		p.metrics.pluginConflicts.WithLabelValues(c.Field).Inc()
		p.nodeEvent(ReasonCPUSetConflict, fmt.Sprintf("NRI plugin %s also sets %s of pod %s/%s container %s, which %s pins: "+
			"containerd refuses to create the container; run one of them on this node", others, c.Field, pod.Namespace, pod.Name, c.Container, me))
	}
}
