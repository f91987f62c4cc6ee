package plugin

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/containerd/nri/pkg/api"
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/cpuset"

	corepin "github.com/corepin/corepin/api"
	"github.com/corepin/corepin/internal/nodeapply"
)

// Release-all is how corepin is uninstalled from a node without unpinning
// anything on a mere plugin restart: the node's corepin.io/release-all
// asks for it explicitly, and it survives the plugin's restarts because
// it is on the Node.

// SetReleaseAll applies the node's corepin.io/release-all. On: every
// container the plugin knows is moved to every online CPU and every NUMA
// node's memory, with the CFS quota the kubelet set, by the plugin's own
// goroutine; new containers get the same, and the drift check stops. Off:
// everything is pinned back as the ledger says.
func (p *Plugin) SetReleaseAll(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ledger.SetReleaseAll(on) {
		if on {
			p.log.Warn("Release-all requested on the node: every container goes to every CPU, nothing is pinned until it is removed", "annotation", corepin.AnnotationReleaseAll)
		} else {
			p.log.Warn("Release-all removed from the node: pinning every container again", "annotation", corepin.AnnotationReleaseAll)
		}
		notify(p.pending)
	}
	p.changed()
}

// ReleaseAll reports whether release-all is requested and whether it is
// done: since a synchronize built the ledger from the runtime's
// containers, every container the plugin knows was moved by an update the
// runtime confirmed, none is failing and no batch is in flight.
func (p *Plugin) ReleaseAll() (requested, done bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	requested = p.ledger.ReleaseAll()
	return requested, requested && p.synced && p.inFlight == 0 && p.ledger.Settled()
}

// ReleaseAllChanged signals that ReleaseAll may answer differently.
func (p *Plugin) ReleaseAllChanged() <-chan struct{} { return p.releaseChanged }

// createReleasedAll gives a container created under release-all the whole
// node: every online CPU, every NUMA node's memory for an exclusive one,
// the quota the kubelet set. Nothing is refused while corepin is being
// uninstalled; the ledger records the container as a synchronize would
// have found it (never refused for capacity, quarantined on a conflict,
// left untracked when its annotations do not place it), so that unsetting
// release-all pins it like the others.
func (p *Plugin) createReleasedAll(pod Pod, sb *api.PodSandbox, c *api.Container) *api.ContainerAdjustment {
	classified, _, err := p.ledger.ClassifyExisting(pod, c.GetName(), amount(c))
	if err != nil {
		classified = &Container{Pod: pod, Name: c.GetName(), Class: Shared, Mems: cpuset.New()}
		describe(classified, c)
		classified.SandboxID = sb.GetId()
		p.ledger.Leave(c.GetId(), classified)
		p.log.Warn("Container not placed by its annotations; created on every CPU under release-all", "pod", pod.Key(), "container", c.GetName(), "err", err)
	} else {
		describe(classified, c)
		classified.SandboxID = sb.GetId()
		if err := p.ledger.AdmitExisting(c.GetId(), classified); err != nil {
			p.ledger.Quarantine(c.GetId(), classified)
			p.log.Warn("Container conflicts; created on every CPU under release-all, its CPUs kept out of the shared pool", "pod", pod.Key(), "container", c.GetName(), "err", err)
		}
	}
	cpus := p.ledger.topo.Online().String()
	adjust := &api.ContainerAdjustment{}
	adjust.SetLinuxCPUSetCPUs(cpus)
	mems := ""
	if classified.Class == Exclusive && !classified.Mems.IsEmpty() {
		mems = p.ledger.numaNodes().String()
		adjust.SetLinuxCPUSetMems(mems)
	}
	classified.applied = applied{known: true, cpus: cpus, mems: mems}
	p.changed()
	p.log.Info("Container created on every CPU (release-all)", "pod", pod.Key(), "container", c.GetName(), "class", classified.Class, "cpus", cpus)
	return adjust
}

// ReleaseAllReporter follows the node's corepin.io/release-all (a WatchNode
// handler) and keeps corepin.io/release-all-done on the node: an RFC 3339
// time while the plugin's release-all is done, absent otherwise, so that
// whoever asked (the chart's pre-delete hook) can wait for it.
type ReleaseAllReporter struct {
	writer *nodeapply.Node
	node   string
	p      *Plugin
	log    *slog.Logger
	kick   chan struct{}

	mu sync.Mutex
	// done is the node's release-all-done as last seen (or written); seen:
	// the watch has seen the node at all.
	done string
	seen bool
	// value is the last release-all value, to log a malformed one once.
	value string
}

// NewReleaseAllReporter returns a reporter for the plugin on node.
func NewReleaseAllReporter(client kubernetes.Interface, node string, p *Plugin, log *slog.Logger) *ReleaseAllReporter {
	return &ReleaseAllReporter{writer: nodeapply.New(client, node, "", nodeapply.ManagerReleaseAllDone), node: node, p: p, log: log, kick: make(chan struct{}, 1)}
}

// NodeHandler is a WatchNode handler: it hands the node's release-all to
// the plugin and tells the reporter what the node says of done. Only
// "true" asks for it: a malformed value is logged and leaves the node
// pinned, as a malformed release-isolate-mode leaves its pod.
func (r *ReleaseAllReporter) NodeHandler() func(*v1.Node) {
	return func(n *v1.Node) {
		value, set := n.Annotations[corepin.AnnotationReleaseAll]
		r.mu.Lock()
		if set && value != "true" && value != "false" && value != r.value {
			r.log.Warn("Ignoring a malformed release-all annotation (only \"true\" or \"false\"); the node stays pinned", "node", n.Name, "value", value)
		}
		r.value = value
		r.done, r.seen = n.Annotations[corepin.AnnotationReleaseAllDone], true
		r.mu.Unlock()
		r.p.SetReleaseAll(value == "true")
		notify(r.kick)
	}
}

// Run keeps the node's release-all-done as the plugin says until ctx is
// done, by server-side apply as its own field manager (removing it removes
// it even where another manager wrote it too); a failed write is retried
// with backoff, and a node deleted meanwhile is not re-created.
func (r *ReleaseAllReporter) Run(ctx context.Context) {
	backoff, retry := apiBackoff(), time.Duration(0)
	for ctx.Err() == nil {
		requested, done := r.p.ReleaseAll()
		r.mu.Lock()
		seen, onNode := r.seen, r.done
		r.mu.Unlock()
		var value *string
		switch {
		case !seen:
		case done && onNode == "":
			now := time.Now().UTC().Format(time.RFC3339)
			value = &now
		case !done && onNode != "":
			value = new(string) // "": removed
		}
		if value != nil {
			var err error
			if *value != "" {
				_, err = r.writer.Apply(ctx, map[string]string{corepin.AnnotationReleaseAllDone: *value})
			} else {
				err = r.writer.Remove(ctx, nil, corepin.AnnotationReleaseAllDone)
			}
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				retry = backoff.Step()
				r.log.Warn("Reporting release-all on the node failed; retrying", "node", r.node, "err", err, "in", retry)
			} else {
				backoff, retry = apiBackoff(), 0
				r.mu.Lock()
				r.done = *value // until the watch says otherwise
				r.mu.Unlock()
				if *value != "" {
					r.log.Info("Release-all done: every container runs on every CPU", "node", r.node, "annotation", corepin.AnnotationReleaseAllDone, "at", *value)
				} else {
					r.log.Info("Release-all not done (or not requested): its done annotation removed", "node", r.node, "requested", requested)
				}
			}
		}
		var wait <-chan time.Time
		if retry > 0 {
			wait = time.After(retry)
		}
		select {
		case <-ctx.Done():
		case <-r.kick:
		case <-r.p.ReleaseAllChanged():
		case <-wait:
		}
	}
}
