//go:build integration

package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/test/integration/framework"
)

// reservationObj is a CPUReservation of an exclusive pod whose one container
// "engine" has cpu CPUs.
func reservationObj(name, cpu, node string, ttl int64) *api.CPUReservation {
	r := &api.CPUReservation{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}
	r.Spec.NodeName = node
	if ttl > 0 {
		r.Spec.TTLSeconds = &ttl
	}
	pod := framework.ExclusivePod(name, cpu)
	r.Spec.Template.Annotations = pod.Annotations
	r.Spec.Template.Spec.Containers = pod.Spec.Containers
	return r
}

type reservations struct {
	t   testing.TB
	dyn dynamic.Interface
}

func (rs reservations) create(r *api.CPUReservation) error {
	obj, err := api.ReservationToUnstructured(r)
	if err != nil {
		rs.t.Fatal(err)
	}
	_, err = rs.dyn.Resource(api.CPUReservationGVR).Namespace(r.Namespace).Create(context.Background(), &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	return err
}

func (rs reservations) get(name string) *api.CPUReservation {
	rs.t.Helper()
	u, err := rs.dyn.Resource(api.CPUReservationGVR).Namespace("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		rs.t.Fatal(err)
	}
	r, err := api.ReservationFromUnstructured(u.Object)
	if err != nil {
		rs.t.Fatal(err)
	}
	return r
}

func (rs reservations) wait(name string, phase api.ReservationPhase) *api.CPUReservation {
	rs.t.Helper()
	var r *api.CPUReservation
	framework.Eventually(rs.t, 60*time.Second, fmt.Sprintf("CPUReservation %s %s", name, phase), func() (bool, error) {
		r = rs.get(name)
		return r.Status.Phase == phase, fmt.Errorf("status %+v", r.Status)
	})
	return r
}

func (rs reservations) delete(name string) {
	rs.t.Helper()
	if err := rs.dyn.Resource(api.CPUReservationGVR).Namespace("default").Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		rs.t.Fatal(err)
	}
}

// onNode pins a pod to a node by its hostname label, the way a user would.
func onNode(p *v1.Pod, node string) *v1.Pod {
	p.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	return p
}

func consumer(name, cpu, reservation string) *v1.Pod {
	return framework.ExclusivePod(name, cpu, api.AnnotationReservation, reservation)
}

// TestReservationCRD: the API server takes the CRD of deploy/ and its
// schema refuses what the contract rules out, with a message naming it.
func TestReservationCRD(t *testing.T) {
	cp := framework.StartControlPlane(t)
	cp.ApplyReservationCRD(t)
	rs := reservations{t, cp.Dynamic}

	zero := reservationObj("zero-ttl", "2", "", 0)
	var z int64
	zero.Spec.TTLSeconds = &z
	twice := reservationObj("twice", "2", "", 0)
	twice.Spec.Template.Spec.Containers = append(twice.Spec.Template.Spec.Containers, twice.Spec.Template.Spec.Containers[0])
	shared := reservationObj("shared", "2", "", 0)
	shared.Spec.Template.Annotations = nil
	milli := reservationObj("milli", "1500m", "", 0)
	for _, tc := range []struct {
		r    *api.CPUReservation
		want string
	}{
		{zero, "spec.ttlSeconds in body should be greater than or equal to 1"},
		{twice, "spec.template.spec.containers[1]: Duplicate value"},
		{shared, `corepin.io/cpu-mode must be "exclusive"`},
		{milli, "no container has a whole CPU amount >= 1"},
	} {
		err := rs.create(tc.r)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.r.Name, err, tc.want)
		}
	}
	ok := reservationObj("ok", "2", "", 0)
	ok.Status.Phase = api.ReservationReserved // users cannot write the status
	if err := rs.create(ok); err != nil {
		t.Fatal(err)
	}
	got := rs.get("ok")
	if got.Spec.TTLSeconds == nil || *got.Spec.TTLSeconds != 600 || got.Status.Phase != "" {
		t.Errorf("created: ttlSeconds %v status %+v, want the default 600 and no status", got.Spec.TTLSeconds, got.Status)
	}
}

// TestReservation runs CPUReservations through the real extender behind a
// real kube-scheduler and API server: two 8-CPU nodes, at most 5 exclusive
// CPUs each (floor(2/3*8)).
func TestReservation(t *testing.T) {
	cp := framework.StartControlPlane(t)
	c := cp.Client
	cp.ApplyReservationCRD(t)
	rs := reservations{t, cp.Dynamic}
	cp.CreateNodes(t, "1s-vm", nil, "node-a", "node-b")
	ext := cp.StartExtender(t)
	cp.StartScheduler(t, "kube-scheduler", "", ext.Verbs())
	checker := watchInvariants(t, c, 5)
	ctx := context.Background()
	// scheduledOnceFreed waits for the pod to be bound to node once what held
	// its room there is gone, poking kube-scheduler to try it again.
	scheduledOnceFreed := func(t *testing.T, name, node, freed string) {
		t.Helper()
		framework.Eventually(t, 60*time.Second, name+" scheduled after "+freed, func() (bool, error) {
			poke(t, c, node, int(time.Now().UnixNano()%1e9))
			p, err := c.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			return err == nil && p.Spec.NodeName == node, err
		})
	}

	t.Run("a reservation is Reserved and the pod naming it gets exactly its cores", func(t *testing.T) {
		if err := rs.create(reservationObj("db-7", "4", "", 0)); err != nil {
			t.Fatal(err)
		}
		r := rs.wait("db-7", api.ReservationReserved)
		held, err := r.Status.AllocStatus()
		if err != nil || held.CPUs.Size() != 4 || held.Containers["engine"].Set().Size() != 4 || r.Status.ReservedAt == nil {
			t.Fatalf("Reserved status %+v (%v)", r.Status, err)
		}
		cp.CreatePod(t, consumer("db-7-0", "4", "db-7"))
		pod := cp.WaitScheduled(t, "db-7-0")
		st := framework.AllocStatus(t, pod)
		if pod.Spec.NodeName != held.Node || st.String() != held.String() {
			t.Fatalf("consumer on %s with %s, the reservation held %s", pod.Spec.NodeName, st, held)
		}
		r = rs.wait("db-7", api.ReservationConsumed)
		if r.Status.ConsumedBy == nil || r.Status.ConsumedBy.Name != "db-7-0" || r.Status.ConsumedBy.UID != pod.UID {
			t.Errorf("consumedBy %+v, want db-7-0 (%s)", r.Status.ConsumedBy, pod.UID)
		}
		if r.Status.CPUs != held.CPUs.String() {
			t.Errorf("Consumed status cpus %q, want %q", r.Status.CPUs, held.CPUs)
		}
	})
	nodeA := rs.get("db-7").Status.Node
	nodeB := map[string]string{"node-a": "node-b", "node-b": "node-a"}[nodeA]

	t.Run("a pod whose containers differ is refused with the reason", func(t *testing.T) {
		if err := rs.create(reservationObj("db-8", "4", nodeB, 0)); err != nil {
			t.Fatal(err)
		}
		rs.wait("db-8", api.ReservationReserved)
		cp.CreatePod(t, consumer("wrong", "3", "db-8"))
		cp.WaitFailedScheduling(t, "wrong", "CPUReservation default/db-8 reserves exclusive containers engine=4, the pod's are engine=3")
		cp.CreatePod(t, consumer("second", "4", "db-7"))
		cp.WaitFailedScheduling(t, "second", "CPUReservation default/db-7 is already consumed by pod default/db-7-0")
		cp.DeletePod(t, "wrong")
		cp.DeletePod(t, "second")
	})

	t.Run("deleting a reservation frees its cores", func(t *testing.T) {
		// db-8 holds 4 of node B's 5: a 2-CPU pod does not fit there.
		cp.CreatePod(t, onNode(framework.ExclusivePod("p1", "2"), nodeB))
		cp.WaitFailedScheduling(t, "p1", "exclusive limit 5 reached (needs 2, holds 4)")
		rs.delete("db-8")
		scheduledOnceFreed(t, "p1", nodeB, "db-8 was deleted")
	})

	t.Run("expiry frees the cores for the next pod", func(t *testing.T) {
		// Node A holds db-7-0's 4: a 1-CPU reservation of 10 s fills it.
		if err := rs.create(reservationObj("db-9", "1", nodeA, 10)); err != nil {
			t.Fatal(err)
		}
		rs.wait("db-9", api.ReservationReserved)
		cp.CreatePod(t, onNode(framework.ExclusivePod("p2", "1"), nodeA))
		cp.WaitFailedScheduling(t, "p2", "exclusive limit 5 reached (needs 1, holds 5)")
		r := rs.wait("db-9", api.ReservationExpired)
		if !strings.Contains(r.Status.Reason, "not consumed within ttlSeconds 10") {
			t.Errorf("Expired reason %q", r.Status.Reason)
		}
		scheduledOnceFreed(t, "p2", nodeA, "db-9 expired")
	})

	t.Run("restarting the extender loses no reservation and gives none away", func(t *testing.T) {
		// Node B: p1 holds 2; db-10 takes the other 3 of its 5.
		if err := rs.create(reservationObj("db-10", "3", nodeB, 0)); err != nil {
			t.Fatal(err)
		}
		held, err := rs.wait("db-10", api.ReservationReserved).Status.AllocStatus()
		if err != nil {
			t.Fatal(err)
		}
		ext.Stop()
		cp.CreatePod(t, onNode(framework.ExclusivePod("p3", "1"), nodeB))
		ext.Start(t)
		cp.WaitFailedScheduling(t, "p3", "exclusive limit 5 reached (needs 1, holds 5)")
		cp.CreatePod(t, consumer("db-10-0", "3", "db-10"))
		pod := cp.WaitScheduled(t, "db-10-0")
		if st := framework.AllocStatus(t, pod); st.String() != held.String() {
			t.Fatalf("after the restart the consumer got %s, the reservation held %s", st, held)
		}
		rs.wait("db-10", api.ReservationConsumed)
		if p, _ := c.CoreV1().Pods("default").Get(ctx, "p3", metav1.GetOptions{}); p.Spec.NodeName != "" {
			t.Errorf("p3 bound to %s, over the exclusive limit", p.Spec.NodeName)
		}
	})
	checker.assert(t)
}
