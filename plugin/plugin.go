package plugin

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/containerd/nri/pkg/api"
	"k8s.io/utils/cpuset"

	corepin "github.com/corepin/corepin/api"
)

// Plugin is the NRI plugin. Its handlers are thin: parse the NRI objects,
// decide through the Ledger, answer with adjustments and updates.
type Plugin struct {
	mu     sync.Mutex
	ledger *Ledger
	log    *slog.Logger
	// pods caches the sandboxes NRI told us about, by sandbox ID.
	pods map[string]Pod
	// kick asks the plugin's own goroutine to push updates that no
	// handler could return (a pod removed without a StopContainer).
	kick chan struct{}
}

// New returns a plugin over a ledger.
func New(ledger *Ledger, log *slog.Logger) *Plugin {
	return &Plugin{ledger: ledger, log: log, pods: map[string]Pod{}, kick: make(chan struct{}, 1)}
}

// Kicks signals when the shared pool grew outside a handler that could
// answer with updates; the owner then calls PoolUpdates and sends them with
// stub.UpdateContainers from its own goroutine (never from a handler: that
// deadlocks with the runtime's lock).
func (p *Plugin) Kicks() <-chan struct{} { return p.kick }

func (p *Plugin) kickPool() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// PoolUpdates returns updates moving every non-exclusive container to the
// current pool.
func (p *Plugin) PoolUpdates() []*api.ContainerUpdate {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.updates("", nil)
}

func podOf(sb *api.PodSandbox) Pod {
	return Pod{Namespace: sb.GetNamespace(), Name: sb.GetName(), Annotations: sb.GetAnnotations(), Labels: sb.GetLabels()}
}

// amount is a container's CPU amount in millicores: its CFS quota over the
// period (the limit), else its CPU shares (the request).
func amount(c *api.Container) int64 {
	cpu := c.GetLinux().GetResources().GetCpu()
	if q, p := cpu.GetQuota().Get(), cpu.GetPeriod().Get(); q != nil && p != nil && *q > 0 && *p > 0 {
		return *q * 1000 / int64(*p)
	}
	if s := cpu.GetShares().Get(); s != nil && *s > 2 {
		return int64(*s) * 1000 / 1024
	}
	return 0
}

func currentCPUs(c *api.Container) (cpuset.CPUSet, bool) {
	list := c.GetLinux().GetResources().GetCpu().GetCpus()
	if list == "" {
		return cpuset.New(), false
	}
	set, err := corepin.ParseCPUList(list)
	return set, err == nil
}

// Synchronize rebuilds the ledger from the containers that exist and
// returns updates for every container whose cpuset is not what it should
// be. A container whose allocation conflicts with another's keeps running
// where it is; the conflict is logged and returned as an error only in the
// log, so the plugin still registers.
func (p *Plugin) Synchronize(_ context.Context, pods []*api.PodSandbox, containers []*api.Container) ([]*api.ContainerUpdate, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ledger = NewLedger(p.ledger.cfg, p.ledger.topo)
	p.pods = map[string]Pod{}
	for _, sb := range pods {
		p.pods[sb.GetId()] = podOf(sb)
	}
	current := map[string]cpuset.CPUSet{}
	for _, c := range containers {
		if s := c.GetState(); s != api.ContainerState_CONTAINER_CREATED && s != api.ContainerState_CONTAINER_RUNNING {
			continue
		}
		pod := p.pods[c.GetPodSandboxId()]
		if cur, ok := currentCPUs(c); ok {
			current[c.GetId()] = cur
		}
		classified, err := p.ledger.Classify(pod, c.GetName(), amount(c))
		if err == nil {
			classified.SandboxID = c.GetPodSandboxId()
			err = p.ledger.Admit(c.GetId(), classified)
		}
		if err != nil {
			// Keep it in the shared pool's accounting without touching its cores.
			p.log.Error("Conflict at synchronize: container left where it is", "pod", pod.Key(), "container", c.GetName(), "err", err)
			continue
		}
	}
	updates := p.updates("", func(c *Container) (cpuset.CPUSet, bool) { cur, ok := current[c.ID]; return cur, ok })
	p.log.Info("Synchronized", "containers", len(p.ledger.Containers()), "updates", len(updates), "sharedPool", p.ledger.SharedPool().String())
	return updates, nil
}

// CreateContainer pins the new container and returns, with it, the updates
// that move every other container to its new cpuset, so the shared pool
// shrinks before the new container starts.
func (p *Plugin) CreateContainer(_ context.Context, sb *api.PodSandbox, c *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pod := podOf(sb)
	p.pods[sb.GetId()] = pod
	classified, err := p.ledger.Classify(pod, c.GetName(), amount(c))
	if err == nil {
		classified.SandboxID = sb.GetId()
		err = p.ledger.Admit(c.GetId(), classified)
	}
	if err != nil {
		var r *Refusal
		if errors.As(err, &r) {
			p.log.Warn("Refused container", "pod", r.Pod, "container", r.Container, "cpus", r.CPUs, "reason", r.Reason)
		}
		return nil, nil, err
	}
	adjust := &api.ContainerAdjustment{}
	adjust.SetLinuxCPUSetCPUs(p.ledger.CPUsFor(classified).String())
	if classified.Class == Exclusive && classified.Mems.Size() > 0 {
		adjust.SetLinuxCPUSetMems(classified.Mems.String())
	}
	var updates []*api.ContainerUpdate
	if classified.Class == Exclusive {
		// Everyone else's cpuset is assumed to be what the ledger said before.
		updates = p.updates(c.GetId(), nil)
	}
	p.log.Info("Pinned container", "pod", pod.Key(), "container", c.GetName(), "class", classified.Class,
		"cpus", p.ledger.CPUsFor(classified).String(), "updates", len(updates))
	return adjust, updates, nil
}

// StopContainer frees an exclusive container's CPUs and grows the others back.
func (p *Plugin) StopContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) ([]*api.ContainerUpdate, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	gone, ok := p.ledger.Forget(c.GetId())
	if !ok || gone.Class != Exclusive {
		return nil, nil
	}
	updates := p.updates("", nil)
	p.log.Info("Freed exclusive CPUs", "pod", gone.Pod.Key(), "container", gone.Name, "cpus", gone.CPUs.String(), "updates", len(updates))
	return updates, nil
}

// RemoveContainer forgets a container (StopContainer usually did already).
func (p *Plugin) RemoveContainer(_ context.Context, _ *api.PodSandbox, c *api.Container) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gone, ok := p.ledger.Forget(c.GetId()); ok && gone.Class == Exclusive {
		p.kickPool()
	}
	return nil
}

// StopPodSandbox frees the CPUs of every container of the pod: a pod
// deleted by the kubelet stops its sandbox without a StopContainer per
// container.
func (p *Plugin) StopPodSandbox(_ context.Context, sb *api.PodSandbox) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ledger.ForgetSandbox(sb.GetId()) {
		p.log.Info("Freed exclusive CPUs of a stopped pod", "pod", podOf(sb).Key())
		p.kickPool()
	}
	return nil
}

// RemovePodSandbox forgets the sandbox.
func (p *Plugin) RemovePodSandbox(_ context.Context, sb *api.PodSandbox) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.pods, sb.GetId())
	if p.ledger.ForgetSandbox(sb.GetId()) {
		p.kickPool()
	}
	return nil
}

// updates returns cpuset updates for the containers (other than skip) whose
// cpuset differs from the ledger's, as current reports it; with current nil
// the shared pool changed, and every container outside it is left alone.
func (p *Plugin) updates(skip string, current func(*Container) (cpuset.CPUSet, bool)) []*api.ContainerUpdate {
	if current == nil {
		current = func(c *Container) (cpuset.CPUSet, bool) {
			if c.Class == Exclusive {
				return c.CPUs, true
			}
			return cpuset.New(), false
		}
	}
	var out []*api.ContainerUpdate
	for _, c := range p.ledger.Drifted(skip, current) {
		u := &api.ContainerUpdate{ContainerId: c.ID}
		u.SetLinuxCPUSetCPUs(p.ledger.CPUsFor(c).String())
		// A container that exited meanwhile must not fail the whole reply.
		u.SetIgnoreFailure()
		out = append(out, u)
	}
	return out
}

// Ledger returns the ledger (for tests and status).
func (p *Plugin) Ledger() *Ledger {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.ledger
}

func (c Class) String() string {
	return [...]string{"shared", "exclusive", "system", "bindall"}[c]
}
