package extender

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/corepin/corepin/api"
)

// Scenario is a simulation scenario (contract section 6).
type Scenario struct {
	Config *api.Config `json:"config,omitempty"`
	Nodes  []v1.Node   `json:"nodes"`
	Steps  []Step      `json:"steps"`
}

// Step creates or deletes one pod.
type Step struct {
	Create *v1.Pod `json:"create,omitempty"`
	// Delete is namespace/name.
	Delete string `json:"delete,omitempty"`
}

// StepResult is one line of simulation output.
type StepResult struct {
	Step       int               `json:"step"`
	Pod        string            `json:"pod,omitempty"`
	Node       string            `json:"node,omitempty"`
	CPUs       *string           `json:"cpus,omitempty"`
	Containers map[string]string `json:"containers,omitempty"`
	Mems       *string           `json:"mems,omitempty"`
	Deleted    string            `json:"deleted,omitempty"`
	Error      string            `json:"error,omitempty"`
}

// ErrMalformedScenario wraps every reason a scenario cannot run at all.
var ErrMalformedScenario = errors.New("malformed scenario")

// ParseScenario reads a scenario strictly.
func ParseScenario(data []byte) (*Scenario, error) {
	var sc Scenario
	if err := api.UnmarshalYAMLStrict(data, &sc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedScenario, err)
	}
	if sc.Config != nil {
		if err := sc.Config.Validate("config"); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformedScenario, err)
		}
	}
	seen := map[string]bool{}
	for i, n := range sc.Nodes {
		if n.Name == "" || seen[n.Name] {
			return nil, fmt.Errorf("%w: nodes[%d]: every node needs a unique metadata.name (got %q)", ErrMalformedScenario, i, n.Name)
		}
		seen[n.Name] = true
	}
	for i, st := range sc.Steps {
		if (st.Create == nil) == (st.Delete == "") {
			return nil, fmt.Errorf("%w: steps[%d]: a step is exactly one of create or delete", ErrMalformedScenario, i)
		}
		if st.Delete != "" && !strings.Contains(st.Delete, "/") {
			return nil, fmt.Errorf("%w: steps[%d]: delete %q: want namespace/name", ErrMalformedScenario, i, st.Delete)
		}
	}
	return &sc, nil
}

// memoryBinder is the simulator's cluster: it records binds in the pods it
// holds (bound ones), and knows the pods that were created but could not
// be scheduled (pending), which a delete removes and a create retries.
type memoryBinder struct {
	pods    map[string]*v1.Pod
	pending map[string]bool
}

func (b *memoryBinder) Bind(_ context.Context, pod *v1.Pod, node, allocStatus string) error {
	p := b.pods[PodKey(pod)]
	if allocStatus != "" {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[api.AnnotationAllocStatus] = allocStatus
	}
	p.Spec.NodeName = node
	return nil
}

// Simulate runs a scenario through the same Filter -> Prioritize -> Bind
// methods the extender serves and writes one JSON object per step to out.
func Simulate(sc *Scenario, out io.Writer) error {
	cfg := api.Config{}
	if sc.Config != nil {
		cfg = *sc.Config
	}
	s, err := NewScheduler(cfg)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrMalformedScenario, err)
	}
	names := make([]string, 0, len(sc.Nodes))
	for i := range sc.Nodes {
		s.UpsertNode(&sc.Nodes[i])
		names = append(names, sc.Nodes[i].Name)
	}
	sort.Strings(names)
	binder := &memoryBinder{pods: map[string]*v1.Pod{}, pending: map[string]bool{}}
	enc := json.NewEncoder(out)
	// Error texts quote rules such as ">= 1": print them as written.
	enc.SetEscapeHTML(false)
	for i, st := range sc.Steps {
		var res StepResult
		if st.Create != nil {
			res = simulateCreate(s, binder, names, st.Create.DeepCopy())
		} else {
			res = StepResult{Deleted: st.Delete}
			// A pod that could not be scheduled exists all the same
			// (pending), as it would in a cluster.
			if _, ok := binder.pods[st.Delete]; !ok && !binder.pending[st.Delete] {
				res = StepResult{Pod: st.Delete, Error: fmt.Sprintf("pod %s not found", st.Delete)}
			}
			delete(binder.pods, st.Delete)
			delete(binder.pending, st.Delete)
			s.DeletePod(st.Delete)
		}
		res.Step = i
		if err := enc.Encode(res); err != nil {
			return err
		}
	}
	return nil
}

// simulateCreate schedules one pod the way kube-scheduler drives the
// extender: filter, prioritize the nodes that fit, bind to the best (ties
// go to the first name, where kube-scheduler would pick at random).
func simulateCreate(s *Scheduler, binder *memoryBinder, names []string, pod *v1.Pod) StepResult {
	if pod.Namespace == "" {
		pod.Namespace = "default"
	}
	key := PodKey(pod)
	res := StepResult{Pod: key}
	if pod.Name == "" {
		res.Error = "pod has no metadata.name"
		return res
	}
	// A create of a pod that is pending (its earlier create could not be
	// scheduled) is another scheduling attempt for it, as kube-scheduler's
	// retry would be; a bound pod cannot be created twice.
	if _, ok := binder.pods[key]; ok {
		res.Error = fmt.Sprintf("pod %s already exists", key)
		return res
	}
	delete(binder.pending, key)
	fits, failed, err := s.Filter(pod, names)
	if err == nil && len(fits) == 0 {
		err = errors.New(unschedulable(len(names), failed))
	}
	var scores extenderv1.HostPriorityList
	if err == nil {
		scores, err = s.Prioritize(pod, fits)
	}
	if err != nil {
		binder.pending[key] = true
		res.Error = err.Error()
		return res
	}
	best := scores[0]
	for _, h := range scores[1:] {
		if h.Score > best.Score {
			best = h
		}
	}
	binder.pods[key] = pod
	status, err := s.Bind(context.Background(), pod, best.Host, binder)
	if err != nil {
		delete(binder.pods, key)
		binder.pending[key] = true
		res.Error = err.Error()
		return res
	}
	if err := s.UpsertPod(pod); err != nil {
		res.Error = err.Error()
		return res
	}
	res.Node = best.Host
	// Contract section 6: a shared pod prints its node and "cpus": "";
	// containers and mems belong to exclusive pods.
	cpus := ""
	res.CPUs = &cpus
	if status != nil {
		cpus = status.CPUs.String()
		mems := status.Mems.String()
		res.Mems = &mems
		res.Containers = map[string]string{}
		for name, set := range status.Containers {
			res.Containers[name] = set.String()
		}
	}
	return res
}

// unschedulable renders the reasons the way kube-scheduler summarises them.
func unschedulable(total int, failed Rejections) string {
	names := slices.Sorted(maps.Keys(failed))
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = n + ": " + failed[n].Message
	}
	if len(parts) == 0 {
		return fmt.Sprintf("0/%d nodes fit", total)
	}
	return fmt.Sprintf("0/%d nodes fit: %s", total, strings.Join(parts, "; "))
}
