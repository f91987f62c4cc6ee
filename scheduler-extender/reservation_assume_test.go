package extender

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/cpuset"

	"github.com/corepin/corepin/api"
)

// Placements in flight count in the view: the next one gets other CPUs, a
// node they filled is refused, and forgetting them frees the CPUs.
func TestAssumedReservationsHoldCPUs(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	a, err := s.AssumeReservation(testReservation("db-a", map[string]int64{"main": 4}), "n1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.AssumeReservation(testReservation("db-b", map[string]int64{"main": 4}), "n1")
	if err != nil {
		t.Fatal(err)
	}
	if a.CPUs.Set().Size() != 4 || b.CPUs.Set().Size() != 4 || !a.CPUs.Set().Intersection(b.CPUs.Set()).IsEmpty() {
		t.Fatalf("assumed %s and %s: want two disjoint sets of 4", a.CPUs, b.CPUs)
	}
	// The node is full in this view: BestNode and a third assumption say so.
	if cand, err := s.BestNode(testReservation("db-c", map[string]int64{"main": 1})); err != nil || cand.Node != "" {
		t.Fatalf("BestNode with the node full of placements in flight: %+v, %v", cand, err)
	}
	if _, err := s.AssumeReservation(testReservation("db-c", map[string]int64{"main": 1}), "n1"); err == nil {
		t.Fatal("a third placement fit on a node its two predecessors filled")
	}
	// One name, one placement in flight.
	if _, err := s.AssumeReservation(testReservation("db-a", map[string]int64{"main": 1}), "n1"); !errors.Is(err, ErrPlacementInFlight) {
		t.Fatalf("second placement of db-a: %v, want ErrPlacementInFlight", err)
	}
	if !s.ForgetAssumedReservation("default/db-a") || s.ForgetAssumedReservation("default/db-a") {
		t.Fatal("ForgetAssumedReservation: want true once, then false")
	}
	n, _ := s.NodeSnapshot("n1")
	if !n.Exclusive().Equals(b.CPUs.Set()) {
		t.Fatalf("after forgetting db-a the node holds %s, want db-b's %s", n.Exclusive(), b.CPUs)
	}
	if s.AssumedReservations() != 1 {
		t.Fatalf("AssumedReservations %d, want 1", s.AssumedReservations())
	}
}

// reservedAs is r as the cluster's extender wrote it back: Reserved on node
// with cpus.
func reservedAs(r *api.CPUReservation, node, cpus string) *api.CPUReservation {
	c := r.DeepCopy()
	c.Status.Phase = api.ReservationReserved
	st, err := api.ParseAllocStatus(fmt.Sprintf(`{"node":%q,"cpus":%q,"containers":{"main":%q},"mems":"0"}`, node, cpus, cpus))
	if err != nil {
		panic(err)
	}
	c.Status.SetAllocation(st)
	return c
}

// The assumption ends when the informer shows the created object decided,
// the CPUs then held by the reservation itself (those the cluster's
// extender chose); an event of another object of the same name, or of the
// object still Pending, leaves it.
func TestAssumedReservationEndsWithItsObject(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	r := testReservation("db-a", map[string]int64{"main": 2})
	if _, err := s.AssumeReservation(r, "n1"); err != nil {
		t.Fatal(err)
	}
	s.AssumedReservationCreated(r.Key(), r.UID)
	if err := s.UpsertReservation(r); err != nil { // Pending: created, not answered yet
		t.Fatal(err)
	}
	older := reservedAs(r, "n1", "6-7")
	older.UID = types.UID("uid-an-earlier-db-a")
	if err := s.UpsertReservation(older); err != nil {
		t.Fatal(err)
	}
	if s.AssumedReservations() != 1 {
		t.Fatal("the Pending object or an earlier object of the name ended the assumption")
	}
	s.DeleteReservation(r.Key())
	if err := s.UpsertReservation(r); err != nil {
		t.Fatal(err)
	}
	// The extender chose 4-5, not the 0-1 this view assumed.
	if err := s.UpsertReservation(reservedAs(r, "n1", "4-5")); err != nil {
		t.Fatal(err)
	}
	if s.AssumedReservations() != 0 {
		t.Fatal("the assumption outlived its object's Reserved status")
	}
	n, _ := s.NodeSnapshot("n1")
	if got := n.Exclusive().String(); got != "4-5" {
		t.Fatalf("node holds %s, want the reserved 4-5 alone", got)
	}

	// Most often the extender chooses the very CPUs assumed here: the
	// reservation takes them over from its assumption.
	same := testReservation("db-b", map[string]int64{"main": 2})
	assumed, err := s.AssumeReservation(same, "n1")
	if err != nil {
		t.Fatal(err)
	}
	s.AssumedReservationCreated(same.Key(), same.UID)
	if err := s.UpsertReservation(reservedAs(same, "n1", assumed.CPUs.String())); err != nil {
		t.Fatalf("Reserved on the assumed CPUs %s: %v", assumed.CPUs, err)
	}
	if got, _ := s.Reservation(same.Key()); got.Phase != api.ReservationReserved || s.AssumedReservations() != 0 {
		t.Fatalf("reservation %+v with %d assumed, want Reserved and none assumed", got, s.AssumedReservations())
	}
	n, _ = s.NodeSnapshot("n1")
	if want := cpuset.New(4, 5).Union(assumed.CPUs.Set()); !n.Exclusive().Equals(want) || n.Len() != 2 {
		t.Fatalf("node holds %s in %d placements, want %s in the two reservations'", n.Exclusive(), n.Len(), want)
	}
}

// The extender can answer, and the informer show it, before the placer's
// create returns: the assumption ends when its UID is recorded, holding
// nothing beside the reservation's CPUs.
func TestAssumedReservationDecidedBeforeItsCreateReturned(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	r := testReservation("db-a", map[string]int64{"main": 2})
	assumed, err := s.AssumeReservation(r, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.UpsertReservation(reservedAs(r, "n1", assumed.CPUs.String())); err != nil {
		t.Fatal(err)
	}
	s.AssumedReservationCreated(r.Key(), r.UID)
	if s.ReservationAssumed(r.Key()) {
		t.Fatal("the assumption outlived its object, decided before its UID was known")
	}
	n, _ := s.NodeSnapshot("n1")
	if !n.Exclusive().Equals(assumed.CPUs.Set()) || n.Len() != 1 {
		t.Fatalf("node holds %s in %d placements, want the reservation's %s alone", n.Exclusive(), n.Len(), assumed.CPUs)
	}
}

// The cluster's extender chooses the CPUs: a reservation it reserved, or a
// pod it bound, on CPUs this view assumed for another placement in flight
// holds them, and that assumption moves to other free CPUs of the node.
func TestDecidedPlacementMovesAnAssumption(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(8, "")))
	a, b := testReservation("db-a", map[string]int64{"main": 2}), testReservation("db-b", map[string]int64{"main": 2})
	assumedA, err := s.AssumeReservation(a, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AssumeReservation(b, "n1"); err != nil {
		t.Fatal(err)
	}
	s.AssumedReservationCreated(b.Key(), b.UID)
	// The extender answered b first, on the CPUs assumed here for a.
	bCPUs := assumedA.CPUs.Set()
	if err := s.UpsertReservation(reservedAs(b, "n1", bCPUs.String())); err != nil {
		t.Fatalf("b Reserved on %s, a's assumed CPUs: %v", bCPUs, err)
	}
	n, _ := s.NodeSnapshot("n1")
	if n.Len() != 2 || n.Exclusive().Size() != 4 || !s.ReservationAssumed(a.Key()) {
		t.Fatalf("node holds %s in %d placements, a assumed %v: want b's and a's moved assumption, 4 CPUs",
			n.Exclusive(), n.Len(), s.ReservationAssumed(a.Key()))
	}

	// A pod bound on the CPUs a's assumption holds now.
	webCPUs := n.Exclusive().Difference(bCPUs)
	if err := s.UpsertPod(boundPod("web", "n1", 0, webCPUs.String())); err != nil {
		t.Fatalf("pod bound on %s, a's assumed CPUs: %v", webCPUs, err)
	}
	n, _ = s.NodeSnapshot("n1")
	if p, ok := n.Pod("default/web"); !ok || !p.CPUs.Equals(webCPUs) || n.Len() != 3 || n.Exclusive().Size() != 6 {
		t.Fatalf("node holds %s in %d placements: want the pod on %s and a's assumption moved again", n.Exclusive(), n.Len(), webCPUs)
	}

	// The node full in the cluster: the assumption holds nothing here
	// until the placer forgets it.
	bigCPUs := cpuset.New(0, 1, 2, 3, 4, 5, 6, 7).Difference(bCPUs.Union(webCPUs))
	if err := s.UpsertPod(boundPod("big", "n1", 0, bigCPUs.String())); err != nil {
		t.Fatalf("pod bound on %s: %v", bigCPUs, err)
	}
	n, _ = s.NodeSnapshot("n1")
	if n.Len() != 3 || n.Exclusive().Size() != 8 || !s.ReservationAssumed(a.Key()) {
		t.Fatalf("node holds %s in %d placements: want b's, web's and big's, a still assumed", n.Exclusive(), n.Len())
	}
	if !s.ForgetAssumedReservation(a.Key()) {
		t.Fatal("a's assumption was lost")
	}
	if n, _ = s.NodeSnapshot("n1"); n.Len() != 3 || n.Exclusive().Size() != 8 {
		t.Fatalf("forgetting a changed the node: %s in %d placements", n.Exclusive(), n.Len())
	}
}

// A node deleted and registered again (a kubelet re-registering) keeps what
// was placed on it: a Reserved reservation and a bound pod hold their CPUs
// throughout, and the deleted node is neither a candidate nor kept once
// nothing is placed there.
func TestDeletedNodeKeepsItsPlacements(t *testing.T) {
	node := testNode("n1", topologyJSON(8, ""))
	s := newTestScheduler(t, node, testNode("n2", topologyJSON(8, "")))
	v := place(t, s, testReservation("db-7", map[string]int64{"main": 4}))
	if v.Phase != api.ReservationReserved {
		t.Fatalf("reservation %+v, want Reserved", v)
	}
	reservedOn := v.Status.Node
	if reservedOn != "n1" {
		// Ties are broken by name: n1 is the better node.
		t.Fatalf("reserved on %s, want n1", reservedOn)
	}
	if err := s.UpsertPod(boundPod("web", "n1", 0, "6-7")); err != nil {
		t.Fatal(err)
	}
	if kept := s.DeleteNode("n1"); kept != 2 {
		t.Fatalf("DeleteNode kept %d placements, want 2 (the reservation and the pod)", kept)
	}
	if names := s.NodeNames(); len(names) != 1 || names[0] != "n2" {
		t.Fatalf("NodeNames after deleting n1: %v, want [n2]", names)
	}
	if cand, _ := s.BestNode(testReservation("db-8", map[string]int64{"main": 1})); cand.Node != "n2" {
		t.Fatalf("a new reservation's best node with n1 deleted: %+v, want n2", cand)
	}
	s.UpsertNode(node)
	n, ok := s.NodeSnapshot("n1")
	want := v.Status.CPUs.Set().Union(cpuset.New(6, 7))
	if !ok || !n.Exclusive().Equals(want) {
		t.Fatalf("n1 registered again holds %v, want the reservation's and the pod's %s", n.Exclusive(), want)
	}
	pod := consumerPod("db-7-0", 4, "db-7")
	fits, failed, err := s.Filter(pod, []string{"n1", "n2"})
	if err != nil || len(fits) != 1 || fits[0] != "n1" {
		t.Fatalf("consumer after n1 came back: fits %v failed %v err %v", fits, failed.FailedNodes(), err)
	}
	fits, failed, err = s.Filter(testPod("big", 4, true), []string{"n1"})
	if err != nil || len(fits) != 0 || !strings.Contains(failed["n1"].Message, "CPU") {
		t.Fatalf("a 4-CPU pod on n1 with 6 of 8 CPUs held: fits %v failed %v err %v", fits, failed.FailedNodes(), err)
	}

	// Deleted for good: it leaves the cache with the last placement.
	s.DeleteNode("n1")
	s.DeletePod("default/web")
	if nodes, _ := s.Counts(); nodes != 2 {
		t.Fatalf("%d nodes in the cache, want 2 while the reservation is still held on deleted n1", nodes)
	}
	s.DeleteReservation("default/db-7")
	if nodes, _ := s.Counts(); nodes != 1 {
		t.Fatalf("%d nodes in the cache, want 1 once nothing is placed on deleted n1", nodes)
	}
}

// A placement assumed on a node deleted meanwhile is forgotten with it.
func TestAssumedReservationOnDeletedNode(t *testing.T) {
	s := newTestScheduler(t, testNode("n1", topologyJSON(4, "")))
	if _, err := s.AssumeReservation(testReservation("db-a", map[string]int64{"main": 2}), "n1"); err != nil {
		t.Fatal(err)
	}
	s.DeleteNode("n1")
	if !s.ForgetAssumedReservation("default/db-a") {
		t.Fatal("the assumption was lost with the node object")
	}
	if nodes, _ := s.Counts(); nodes != 0 {
		t.Fatalf("%d nodes left, want 0", nodes)
	}
	if _, err := s.AssumeReservation(testReservation("db-b", map[string]int64{"main": 2}), "gone"); err == nil ||
		!strings.Contains(fmt.Sprint(err), "unknown") {
		t.Fatalf("assumption on an unknown node: %v", err)
	}
}
