package plugin

import (
	"fmt"
	"net/http"
	"sync"
	"time"
)

// health is the state of the plugin's NRI connection, for the probes.
type health struct {
	mu sync.Mutex
	// connected: synchronized on the current connection.
	connected bool
	// since is when the connection was last lost (or the process started).
	since time.Time
	// lastErr is why it was lost.
	lastErr string
	now     func() time.Time
}

func newHealth(now func() time.Time) *health {
	return &health{since: now(), now: now, lastErr: "not connected yet"}
}

// synchronized is called when the runtime synchronized the plugin.
func (h *health) synchronized() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.connected = true
}

// Disconnected records that the plugin's NRI connection ended (the owner
// calls it when the stub's Run returns).
func (p *Plugin) Disconnected(err error) {
	h := p.health
	h.mu.Lock()
	defer h.mu.Unlock()
	h.connected, h.since, h.lastErr = false, h.now(), "connection lost"
	if err != nil {
		h.lastErr = "connection lost: " + err.Error()
	}
}

// state reports whether the plugin is connected and, if not, for how long
// it has not been and why.
func (h *health) state() (bool, time.Duration, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.connected, h.now().Sub(h.since), h.lastErr
}

// HealthHandler serves /healthz: 200 while the plugin is connected to the
// runtime, or has been without a connection for less than grace
// (reconnecting with backoff is normal); 503 with the reason after that.
func (p *Plugin) HealthHandler(grace time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		ok, down, why := p.health.state()
		if !ok && down > grace {
			http.Error(w, fmt.Sprintf("no NRI connection for %s (%s)", down.Round(time.Second), why), http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintln(w, "ok")
	})
}

// ReadyHandler serves /readyz: 200 once the runtime has synchronized the
// plugin on its current connection (every container pinned as the ledger
// says); 503 with the reason otherwise.
func (p *Plugin) ReadyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		ok, down, why := p.health.state()
		if !ok {
			http.Error(w, fmt.Sprintf("not synchronized with the runtime for %s (%s)", down.Round(time.Second), why), http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintln(w, "ok")
	})
}
