package plugin

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"

	corepin "github.com/corepin/corepin/api"
	"github.com/corepin/corepin/internal/nodeapply"
)

// TopologyPublisher keeps corepin.io/topology on the node equal to the
// topology discovered on the host: it publishes at start, re-discovers
// every interval and republishes when the host changed (CPUs brought
// online, for example) or when the node's annotation differs from it
// (removed or overwritten, as its node watch reports).
type TopologyPublisher struct {
	client   kubernetes.Interface
	writer   *nodeapply.Node
	node     string
	discover func() (corepin.Topology, error)
	interval time.Duration
	log      *slog.Logger
	kick     chan struct{}
	// OnChange, when set, is told of a re-discovered topology that differs
	// from the last one (the plugin adopts a compatible grow); its error is
	// logged. The topology is published either way, for the extender to
	// accept or flag.
	OnChange func(corepin.Topology) error

	mu sync.Mutex
	// onNode is the annotation as the node watch last saw it; seen: it
	// has seen the node at all; watched counts what the watch reported.
	onNode  string
	seen    bool
	watched uint64
}

// NewTopologyPublisher returns a publisher; interval <= 0 discovers only
// at start. With a nil client (the plugin run without API access) it only
// re-discovers and tells OnChange: the plugin still adopts CPUs brought
// online.
func NewTopologyPublisher(client kubernetes.Interface, node string, discover func() (corepin.Topology, error), interval time.Duration, log *slog.Logger) *TopologyPublisher {
	t := &TopologyPublisher{client: client, node: node, discover: discover, interval: interval, log: log, kick: make(chan struct{}, 1)}
	if client != nil {
		t.writer = nodeapply.New(client, node, "", nodeapply.ManagerTopology)
	}
	return t
}

// NodeHandler is a WatchNode handler: it tells the publisher what the
// node's annotation is now.
func (t *TopologyPublisher) NodeHandler() func(*v1.Node) {
	return func(n *v1.Node) {
		t.mu.Lock()
		t.onNode, t.seen = n.Annotations[corepin.AnnotationTopology], true
		t.watched++
		t.mu.Unlock()
		notify(t.kick)
	}
}

// differs reports whether the node's annotation, as last seen, is not
// value; watched is how many reports that reading comes after.
func (t *TopologyPublisher) differs(value string) (differs bool, watched uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.seen && t.onNode != value, t.watched
}

// applied records a publish of value that began after watched reports: the
// node holds it now, unless the watch reported since (an overwrite seen
// while the write was in flight is newer than it, and must not be lost).
func (t *TopologyPublisher) applied(value string, watched uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.watched == watched {
		t.onNode = value
	}
}

// Run publishes until ctx is done, by server-side apply as the topology's
// own field manager. A failed write (a node deleted meanwhile among them: it
// is not re-created) is retried with backoff; a discovery that fails keeps
// the last topology.
func (t *TopologyPublisher) Run(ctx context.Context) {
	var desired, published string
	var cpus int
	rediscover := func() {
		topo, err := t.discover()
		if err != nil {
			t.log.Warn("Topology discovery failed; keeping the last one", "err", err)
			return
		}
		value, err := json.Marshal(topo)
		if err != nil {
			t.log.Error("Topology not encodable", "err", err)
			return
		}
		if desired != "" && string(value) != desired {
			t.log.Warn("The host's CPU topology changed; republishing it", "node", t.node, "cpus", len(topo.CPUs))
			if t.OnChange != nil {
				if err := t.OnChange(topo); err != nil {
					t.log.Error("The changed topology is not enforced", "node", t.node, "err", err)
				}
			}
		}
		desired, cpus = string(value), len(topo.CPUs)
	}
	rediscover()
	var tick <-chan time.Time
	if t.interval > 0 {
		ticker := time.NewTicker(t.interval)
		defer ticker.Stop()
		tick = ticker.C
	}
	backoff, retry := apiBackoff(), time.Duration(0)
	for ctx.Err() == nil {
		differs, watched := t.differs(desired)
		if t.client != nil && desired != "" && (desired != published || differs) {
			if _, err := t.writer.Apply(ctx, map[string]string{corepin.AnnotationTopology: desired}); err != nil {
				retry = backoff.Step()
				t.log.Warn("Publishing topology failed; retrying", "node", t.node, "err", err, "in", retry)
			} else {
				if published == desired {
					t.log.Warn("The node's topology annotation was removed or changed; published it again", "node", t.node)
				} else {
					t.log.Info("Published topology", "node", t.node, "cpus", cpus)
				}
				published, backoff, retry = desired, apiBackoff(), 0
				t.applied(desired, watched)
			}
		}
		var wait <-chan time.Time
		if retry > 0 {
			wait = time.After(retry)
		}
		select {
		case <-ctx.Done():
		case <-tick:
			rediscover()
		case <-t.kick:
		case <-wait:
		}
	}
}
