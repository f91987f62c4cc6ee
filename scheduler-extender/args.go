package extender

import (
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/corepin/corepin/policy"
)

// extenderArgs is extenderv1.ExtenderArgs as this extender reads it, with the
// same JSON names. kube-scheduler sends the whole pod (status, env, managed
// fields) and every candidate node's name with each filter and prioritize
// call, once per pod: decoding all of it into a v1.Pod and one string per
// name was a quarter of the extender's CPU in the throughput benchmark. The
// pod is decoded into the few fields the engine reads (the rest is scanned,
// not built).
type extenderArgs struct {
	Pod       *wirePod      `json:"pod"`
	Nodes     *wireNodeList `json:"nodes"`
	NodeNames *[]string     `json:"nodenames"`
}

// wirePod holds what policy.NewRequest, the pipelines' selectors, the
// events on the pod and preemption (the priority, the nominated node) read.
type wirePod struct {
	Metadata struct {
		Name            string            `json:"name"`
		Namespace       string            `json:"namespace"`
		UID             types.UID         `json:"uid"`
		ResourceVersion string            `json:"resourceVersion"`
		Labels          map[string]string `json:"labels"`
		Annotations     map[string]string `json:"annotations"`
	} `json:"metadata"`
	Spec struct {
		NodeName       string          `json:"nodeName"`
		Priority       *int32          `json:"priority"`
		Containers     []wireContainer `json:"containers"`
		InitContainers []wireContainer `json:"initContainers"`
	} `json:"spec"`
	Status struct {
		NominatedNodeName string `json:"nominatedNodeName"`
	} `json:"status"`
}

type wireContainer struct {
	Name          string                     `json:"name"`
	Resources     v1.ResourceRequirements    `json:"resources"`
	RestartPolicy *v1.ContainerRestartPolicy `json:"restartPolicy"`
}

func (w *wirePod) pod() *v1.Pod {
	m := &w.Metadata
	pod := &v1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
			Labels: m.Labels, Annotations: m.Annotations},
		Spec:   v1.PodSpec{NodeName: w.Spec.NodeName, Priority: w.Spec.Priority, Containers: make([]v1.Container, len(w.Spec.Containers))},
		Status: v1.PodStatus{NominatedNodeName: w.Status.NominatedNodeName},
	}
	for i, c := range w.Spec.Containers {
		pod.Spec.Containers[i] = v1.Container{Name: c.Name, Resources: c.Resources}
	}
	// Native sidecars count in the shared amount; other init containers
	// finish before the app starts.
	for _, c := range w.Spec.InitContainers {
		if init := (v1.Container{Name: c.Name, Resources: c.Resources, RestartPolicy: c.RestartPolicy}); policy.IsNativeSidecar(&init) {
			pod.Spec.InitContainers = append(pod.Spec.InitContainers, init)
		}
	}
	return pod
}

// wireNodeList is the form kube-scheduler uses when the extender is not
// nodeCacheCapable: whole Node objects, of which only the names matter here.
type wireNodeList struct {
	Items []struct {
		Metadata struct {
			Name string `json:"name"`
		} `json:"metadata"`
	} `json:"items"`
}

// names takes the candidate names from either form kube-scheduler sends.
func (a *extenderArgs) names() []string {
	if a.NodeNames != nil {
		return *a.NodeNames
	}
	if a.Nodes != nil {
		names := make([]string, len(a.Nodes.Items))
		for i := range a.Nodes.Items {
			names[i] = a.Nodes.Items[i].Metadata.Name
		}
		return names
	}
	return nil
}
