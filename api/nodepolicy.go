package api

import (
	"math"
	"strings"
)

// Defaults of the capacity rules (contract section 4).
const (
	DefaultMaxExclusiveRatio = 2.0 / 3.0
	DefaultSharedOvercommit  = 2.0
	DefaultSharedHeadroom    = 2
)

// NodePolicy is the value of corepin.io/node-policy and the capacity part of
// the extender's configuration. Nil fields are not set (use the default or
// the next level up).
type NodePolicy struct {
	MaxExclusiveRatio *float64 `json:"maxExclusiveRatio,omitempty"`
	SharedOvercommit  *float64 `json:"sharedOvercommit,omitempty"`
	SharedHeadroom    *int     `json:"sharedHeadroom,omitempty"`
}

// Limits are the resolved capacity parameters of one node.
type Limits struct {
	// MaxExclusiveRatio is the share of P that may be sold as exclusive (0..1).
	MaxExclusiveRatio float64
	// SharedOvercommit (r) is how many shared CPU amounts one shared CPU carries.
	SharedOvercommit float64
	// SharedHeadroom (h) is how many times the largest shared pod must fit in the pool.
	SharedHeadroom int
}

// DefaultLimits returns the contract's defaults.
func DefaultLimits() Limits {
	return Limits{MaxExclusiveRatio: DefaultMaxExclusiveRatio, SharedOvercommit: DefaultSharedOvercommit, SharedHeadroom: DefaultSharedHeadroom}
}

// Apply overrides l with the fields p sets.
func (p NodePolicy) Apply(l Limits) Limits {
	if p.MaxExclusiveRatio != nil {
		l.MaxExclusiveRatio = *p.MaxExclusiveRatio
	}
	if p.SharedOvercommit != nil {
		l.SharedOvercommit = *p.SharedOvercommit
	}
	if p.SharedHeadroom != nil {
		l.SharedHeadroom = *p.SharedHeadroom
	}
	return l
}

// Validate checks the ranges; key names the annotation or file in errors.
func (p NodePolicy) Validate(key string) error {
	if v := p.MaxExclusiveRatio; v != nil && (math.IsNaN(*v) || *v < 0 || *v > 1) {
		return fieldError(key, "maxExclusiveRatio", *v, "must be between 0 and 1")
	}
	if v := p.SharedOvercommit; v != nil && (math.IsNaN(*v) || math.IsInf(*v, 0) || *v < 1) {
		return fieldError(key, "sharedOvercommit", *v, "must be a number >= 1")
	}
	if v := p.SharedHeadroom; v != nil && (*v < 0 || *v > 1024) {
		return fieldError(key, "sharedHeadroom", *v, "must be an integer from 0 to 1024")
	}
	return nil
}

// ParseNodePolicy parses corepin.io/node-policy strictly. Empty means no override.
func ParseNodePolicy(value string) (NodePolicy, error) {
	var p NodePolicy
	if strings.TrimSpace(value) == "" {
		return p, nil
	}
	if err := decodeStrict(AnnotationNodePolicy, value, &p); err != nil {
		return NodePolicy{}, err
	}
	if err := p.Validate(AnnotationNodePolicy); err != nil {
		return NodePolicy{}, err
	}
	return p, nil
}

// SharedPoolStatus is the value of corepin.io/shared-pool.
type SharedPoolStatus struct {
	CPUs CPUList `json:"cpus"`
}

// ParseSharedPoolStatus parses corepin.io/shared-pool strictly.
func ParseSharedPoolStatus(value string) (SharedPoolStatus, error) {
	var s SharedPoolStatus
	err := decodeStrict(AnnotationSharedPool, value, &s)
	return s, err
}
