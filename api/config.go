package api

import (
	"fmt"
	"os"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ScoringStrategy ranks feasible nodes in prioritize.
type ScoringStrategy string

const (
	// MostAllocated packs pods onto the fullest feasible node (the default:
	// it keeps whole nodes free for large exclusive pods).
	MostAllocated ScoringStrategy = "MostAllocated"
	// LeastAllocated spreads pods onto the emptiest feasible node.
	LeastAllocated ScoringStrategy = "LeastAllocated"
)

// Filter plugin names a pipeline may list.
const (
	FilterTopology  = "topology"
	FilterCapacity  = "capacity"
	FilterAppSpread = "app-spread"
	FilterIOQueue   = "io-queue"
)

// AllFilters is the default pipeline, in the order the filters run.
var AllFilters = []string{FilterTopology, FilterCapacity, FilterAppSpread, FilterIOQueue}

// Config is the extender's configuration file and the `config:` block of a
// simulation scenario.
type Config struct {
	NodePolicy `json:",inline"`
	// ScoringStrategy defaults to MostAllocated.
	ScoringStrategy ScoringStrategy `json:"scoringStrategy,omitempty"`
	// BindAllNamespaces are the namespaces whose pods may use BindAllCPUs.
	BindAllNamespaces []string `json:"bindAllNamespaces,omitempty"`
	// SystemNamespaces get the shared pool plus the reserved CPUs; default kube-system.
	SystemNamespaces []string `json:"systemNamespaces,omitempty"`
	// Pipelines choose the filters per workload class; the first whose
	// selector matches the pod's labels wins, and a pipeline without a
	// selector matches every pod. Without pipelines every filter runs.
	Pipelines []Pipeline `json:"pipelines,omitempty"`
	TLS       *TLSConfig `json:"tls,omitempty"`
}

// Pipeline is a named list of filters for one workload class.
type Pipeline struct {
	Name     string                `json:"name"`
	Selector *metav1.LabelSelector `json:"selector,omitempty"`
	Filters  []string              `json:"filters"`
}

// TLSConfig serves the extender over HTTPS, optionally requiring client
// certificates from kube-scheduler signed by ClientCAFile.
type TLSConfig struct {
	CertFile     string `json:"certFile"`
	KeyFile      string `json:"keyFile"`
	ClientCAFile string `json:"clientCAFile,omitempty"`
}

// Limits resolves the capacity parameters with the contract's defaults.
func (c Config) Limits() Limits { return c.NodePolicy.Apply(DefaultLimits()) }

// Strategy returns the scoring strategy with its default.
func (c Config) Strategy() ScoringStrategy {
	if c.ScoringStrategy == "" {
		return MostAllocated
	}
	return c.ScoringStrategy
}

// Systems returns the system namespaces with their default.
func (c Config) Systems() []string {
	if c.SystemNamespaces == nil {
		return []string{"kube-system"}
	}
	return c.SystemNamespaces
}

// Validate checks every field; source names the file in errors.
func (c Config) Validate(source string) error {
	if err := c.NodePolicy.Validate(source); err != nil {
		return err
	}
	switch c.ScoringStrategy {
	case "", MostAllocated, LeastAllocated:
	default:
		return fieldError(source, "scoringStrategy", fmt.Sprintf("%q", c.ScoringStrategy), "must be MostAllocated or LeastAllocated")
	}
	names := map[string]bool{}
	for i, p := range c.Pipelines {
		if p.Name == "" || names[p.Name] {
			return fieldError(source, fmt.Sprintf("pipelines[%d].name", i), fmt.Sprintf("%q", p.Name), "must be unique and not empty")
		}
		names[p.Name] = true
		if p.Selector != nil {
			if _, err := metav1.LabelSelectorAsSelector(p.Selector); err != nil {
				return fieldError(source, fmt.Sprintf("pipelines[%d].selector", i), p.Selector.String(), err.Error())
			}
		}
		for _, f := range p.Filters {
			if !isFilter(f) {
				return fieldError(source, fmt.Sprintf("pipelines[%d].filters", i), fmt.Sprintf("%q", f),
					"unknown filter, want one of "+strings.Join(AllFilters, ", "))
			}
		}
	}
	if t := c.TLS; t != nil && (t.CertFile == "" || t.KeyFile == "") {
		return fieldError(source, "tls", fmt.Sprintf("%+v", *t), "certFile and keyFile are both required")
	}
	return nil
}

func isFilter(name string) bool {
	for _, f := range AllFilters {
		if f == name {
			return true
		}
	}
	return false
}

// ParseConfig parses a YAML or JSON configuration strictly.
func ParseConfig(source string, data []byte) (Config, error) {
	var c Config
	if err := UnmarshalYAMLStrict(data, &c); err != nil {
		return Config{}, fmt.Errorf("%s: %w", source, err)
	}
	if err := c.Validate(source); err != nil {
		return Config{}, err
	}
	return c, nil
}

// LoadConfig reads and parses a configuration file.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading config: %w", err)
	}
	return ParseConfig(path, data)
}
