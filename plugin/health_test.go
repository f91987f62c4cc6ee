package plugin

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestProbes: /healthz fails only after the NRI connection has been gone
// longer than the grace period; /readyz is ready only while synchronized
// on the current connection.
func TestProbes(t *testing.T) {
	p := newTestPlugin(t)
	now := time.Unix(1000, 0)
	p.health = newHealth(func() time.Time { return now })
	probe := func(path string) (int, string) {
		h := p.HealthHandler(30 * time.Second)
		if path == "/readyz" {
			h = p.ReadyHandler()
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code, rec.Body.String()
	}
	for _, tc := range []struct {
		name    string
		step    func()
		healthz int
		readyz  int
		reason  string
	}{
		{"started, not connected yet", func() {}, 200, 503, "not synchronized with the runtime for 0s (not connected yet)"},
		{"never connected past the grace", func() { now = now.Add(31 * time.Second) }, 503, 503, "no NRI connection for 31s (not connected yet)"},
		{"synchronized", func() { _, _ = p.Synchronize(context.Background(), nil, nil) }, 200, 200, ""},
		{"connection lost", func() { p.Disconnected(errors.New("ttrpc: closed")) }, 200, 503, "(connection lost: ttrpc: closed)"},
		{"lost within the grace", func() { now = now.Add(29 * time.Second) }, 200, 503, ""},
		{"lost past the grace", func() { now = now.Add(2 * time.Second) }, 503, 503, "no NRI connection for 31s (connection lost: ttrpc: closed)"},
		{"reconnected", func() { _, _ = p.Synchronize(context.Background(), nil, nil) }, 200, 200, ""},
	} {
		tc.step()
		hc, hb := probe("/healthz")
		rc, rb := probe("/readyz")
		if hc != tc.healthz || rc != tc.readyz {
			t.Errorf("%s: /healthz %d %q, /readyz %d %q; want %d and %d", tc.name, hc, hb, rc, rb, tc.healthz, tc.readyz)
		}
		if tc.reason != "" && !strings.Contains(hb+rb, tc.reason) {
			t.Errorf("%s: bodies %q %q, want the reason %q", tc.name, hb, rb, tc.reason)
		}
	}
}
