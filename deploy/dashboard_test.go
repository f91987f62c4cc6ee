package deploy

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/corepin/corepin/api"
	"github.com/corepin/corepin/plugin"
	extender "github.com/corepin/corepin/scheduler-extender"
)

// registered returns the metrics the extender and the plugin register, with
// their variable labels, read from the registries their constructors build:
// renaming a metric or a label in the code fails the dashboard test.
func registered(t *testing.T) map[string][]string {
	t.Helper()
	sched, err := extender.NewScheduler(api.Config{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	// Desc has no accessors; its String is the only public rendering.
	descRE := regexp.MustCompile(`^Desc\{fqName: "([^"]+)", .*variableLabels: \{([^}]*)\}\}$`)
	for _, reg := range []*prometheus.Registry{extender.NewMetrics(sched).Registry, plugin.NewMetrics().Registry} {
		ch := make(chan *prometheus.Desc)
		go func() { reg.Describe(ch); close(ch) }()
		for d := range ch {
			m := descRE.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read the metric name from %s", d)
			}
			var labels []string
			if m[2] != "" {
				labels = strings.Split(m[2], ",")
			}
			out[m[1]] = labels
		}
	}
	if len(out) < 10 {
		t.Fatalf("only %d metrics registered: %v", len(out), out)
	}
	return out
}

type dashboard struct {
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	Title      string `json:"title"`
	Type       string `json:"type"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

var (
	metricRE = regexp.MustCompile(`\bcorepin_[a-zA-Z0-9_]+`)
	byRE     = regexp.MustCompile(`\bby \(([^)]*)\)`)
)

// Every metric the dashboard queries is one the extender or the plugin
// registers (histogram series by their _bucket, _sum and _count), every
// label it groups by is one of theirs (or le, instance, job), and every
// panel queries the ${DS_PROMETHEUS} data source.
func TestDashboardMetrics(t *testing.T) {
	known := registered(t)
	data, err := os.ReadFile("dashboards/corepin.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("dashboards/corepin.json: %v", err)
	}
	hasDSVar := false
	var exprs []string
	for _, v := range d.Templating.List {
		if v.Name == "DS_PROMETHEUS" && v.Type == "datasource" {
			hasDSVar = true
		}
		if v.Definition != "" {
			exprs = append(exprs, v.Definition)
		}
	}
	if !hasDSVar {
		t.Error("no datasource variable DS_PROMETHEUS")
	}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "${DS_PROMETHEUS}" {
				t.Errorf("panel %q: datasource %+v, want ${DS_PROMETHEUS}", p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, target := range p.Targets {
				if len(metricRE.FindAllString(target.Expr, -1)) == 0 {
					t.Errorf("panel %q: %q queries no corepin metric", p.Title, target.Expr)
				}
				exprs = append(exprs, target.Expr)
			}
		}
	}
	walk(d.Panels)
	used := map[string]bool{}
	for _, expr := range exprs {
		names := metricRE.FindAllString(expr, -1)
		labels := map[string]bool{"le": true, "instance": true, "job": true}
		for _, name := range names {
			base := name
			if _, ok := known[name]; !ok {
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(name, suffix); ok {
						if _, ok := known[b]; ok {
							base = b
						}
					}
				}
			}
			ls, ok := known[base]
			if !ok {
				t.Errorf("%q: metric %s is registered by neither the extender nor the plugin", expr, name)
				continue
			}
			used[base] = true
			for _, l := range ls {
				labels[l] = true
			}
		}
		for _, m := range byRE.FindAllStringSubmatch(expr, -1) {
			for _, l := range strings.Split(m[1], ",") {
				if l = strings.TrimSpace(l); !labels[l] {
					t.Errorf("%q: grouping by label %q, which %v do not have", expr, l, names)
				}
			}
		}
	}
	// The brief of the dashboard: each of these has a panel.
	for _, name := range []string{
		"corepin_extender_request_duration_seconds", "corepin_extender_filter_rejections_total", "corepin_extender_binds_total",
		"corepin_extender_cache_nodes", "corepin_extender_cache_pods", "corepin_nri_handler_duration_seconds",
		"corepin_nri_shared_pool_cpus", "corepin_nri_exclusive_cpus", "corepin_nri_container_updates_total",
		"corepin_nri_drift_corrections_total", "corepin_nri_refusals_total",
	} {
		if !used[name] {
			t.Errorf("no panel shows %s", name)
		}
	}
	var corepin []string
	for name := range known {
		if strings.HasPrefix(name, "corepin_") && !used[name] {
			corepin = append(corepin, name)
		}
	}
	sort.Strings(corepin)
	if len(corepin) > 0 {
		t.Logf("registered but not on the dashboard: %v", corepin)
	}
}
