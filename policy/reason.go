package policy

import (
	"errors"
	"fmt"
)

// Code classifies why the engine refuses or does not honour something, as
// the scheduler framework's Status codes do: metrics labels, events and
// corepinctl switch on it, never on a message's wording.
type Code string

// The codes are low-cardinality and stable: they are metric label values.
const (
	CodeOther Code = "other"
	// A pod's own annotations.
	CodeBadAnnotation    Code = "bad-annotation"
	CodeNotPlaced        Code = "not-placed"
	CodeWrongNode        Code = "wrong-node"
	CodeBindAllNamespace Code = "bindall-namespace"
	CodeMaxPerNodeNoApp  Code = "max-per-node-no-app"
	// The node's CPUs: offline, reserved or held by another pod.
	CodeConflict Code = "conflict"
	// The capacity rules (contract section 4).
	CodeExclusiveLimit Code = "exclusive-limit"
	CodeSharedHeadroom Code = "shared-headroom"
	CodeSharedPool     Code = "shared-pool"
	// The placement rules.
	CodeMaxPerNode    Code = "max-per-node"
	CodeAttention     Code = "attention"
	CodeNoTopology    Code = "no-topology"
	CodeNUMARequired  Code = "numa-required"
	CodeSpread        Code = "spread"
	CodeCores         Code = "cores"
	CodeIOQueue       Code = "io-queue"
	CodeUnknownNode   Code = "unknown-node"
	CodeUnknownFilter Code = "unknown-filter"
	// An in-place resize the engine refuses (to a fraction, say); a grow
	// that does not fit has the code of the rule it breaks.
	CodeResize Code = "resize"
)

// Reason is an error with a Code; its message says what a user must know.
type Reason struct {
	Code    Code
	Message string
	// Err is the error the reason was read from, if any (errors.Join's
	// list of annotation errors stays reachable).
	Err error
}

func (r *Reason) Error() string { return r.Message }

func (r *Reason) Unwrap() error { return r.Err }

// Reasonf builds a Reason.
func Reasonf(code Code, format string, args ...any) *Reason {
	return &Reason{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf is the Code of the first Reason in err's chain, CodeOther when
// there is none, "" for a nil error.
func CodeOf(err error) Code {
	if err == nil {
		return ""
	}
	var r *Reason
	if errors.As(err, &r) {
		return r.Code
	}
	return CodeOther
}
