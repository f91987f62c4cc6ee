package api

import (
	"errors"
	"fmt"
	"strconv"
)

// PodIntent is what a pod's annotations ask of corepin, parsed once.
type PodIntent struct {
	Mode CPUMode
	Spec AllocSpec
	// MaxPerNode is the corepin.io/max-per-node limit; 0 means none.
	MaxPerNode int
	// App is the app identity for max-per-node and the same-app rules; empty means none.
	App            string
	ReleaseIsolate bool
	ExcludeReserve bool
}

// BindAll reports whether the pod asks to be pinned to every online CPU.
func (p PodIntent) BindAll() bool { return p.Spec.CPU == BindAllCPUs }

// Exclusive reports whether the pod holds dedicated CPUs. BindAllCPUs pods
// hold none and are counted as shared, whatever their cpu-mode says.
func (p PodIntent) Exclusive() bool { return p.Mode == ModeExclusive && !p.BindAll() }

// ParsePodIntent reads the corepin annotations of a pod (and the labels used
// for the app identity). All problems are reported together, each naming the
// annotation and its value.
func ParsePodIntent(annotations, labels map[string]string) (PodIntent, error) {
	intent := PodIntent{Mode: ModeShared, ExcludeReserve: true}
	var errs []error

	switch v, ok := annotations[AnnotationCPUMode]; {
	case !ok:
	case v == string(ModeShared) || v == string(ModeExclusive):
		intent.Mode = CPUMode(v)
	default:
		errs = append(errs, fmt.Errorf("%s=%q: must be exclusive or shared", AnnotationCPUMode, v))
	}

	spec, err := ParseAllocSpec(annotations[AnnotationAllocSpec])
	if err != nil {
		errs = append(errs, err)
	}
	intent.Spec = spec

	if v, ok := annotations[AnnotationMaxPerNode]; ok {
		// Plain digits only, as a user writes a count: Atoi alone would
		// also take " 2", "+1" and "01".
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || v[0] < '1' || v[0] > '9' {
			errs = append(errs, fmt.Errorf("%s=%q: must be an integer >= 1", AnnotationMaxPerNode, v))
		}
		intent.MaxPerNode = n
	}

	intent.App = AppOf(annotations, labels)

	if intent.ReleaseIsolate, err = parseBool(annotations, AnnotationReleaseIsolateMode, false); err != nil {
		errs = append(errs, err)
	}
	if intent.ExcludeReserve, err = parseBool(annotations, AnnotationExcludeReserveCPUSet, true); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return PodIntent{}, errors.Join(errs...)
	}
	return intent, nil
}

// AppOf returns the app identity: corepin.io/app, else the label
// app.kubernetes.io/name, else the label app, else "".
func AppOf(annotations, labels map[string]string) string {
	if v := annotations[AnnotationApp]; v != "" {
		return v
	}
	if v := labels[LabelAppName]; v != "" {
		return v
	}
	return labels[LabelApp]
}

// parseBool accepts exactly "true" and "false", as the contract says; a
// "yes" or "1" is more likely a mistake than an intent.
func parseBool(annotations map[string]string, key string, def bool) (bool, error) {
	v, ok := annotations[key]
	if !ok {
		return def, nil
	}
	switch v {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return def, fmt.Errorf("%s=%q: must be true or false", key, v)
}
