// Package policy is corepin's allocation engine: given a node's CPU topology,
// what is already placed on it and a pod's request, it decides whether the
// pod fits and which logical CPUs an exclusive pod gets. It does no I/O and
// reads no clock, so the scheduler extender, the node plugin and the
// simulator all make the same decision from the same inputs.
//
// The rules are those of the corepin contract (../shared/design/contract.md):
// SameCoreFirst, Spread (with stacking) and BindAllCPUs; NUMA None, Preferred
// and Required; IO-queue spreading; the same-app rules; max-per-node; and the
// capacity formula
//
//	exclusiveLimit = min(floor(ratio*P), P - h*M, P - ceil(S/r))
package policy
