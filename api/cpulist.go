package api

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/utils/cpuset"
)

// MaxCPUID bounds the CPU ids corepin accepts. Linux supports at most 8192
// CPUs in common configurations; the bound keeps a hostile list such as
// "0-999999999" from allocating gigabytes inside cpuset.Parse.
const MaxCPUID = 1<<16 - 1

// ParseCPUList parses a Linux CPU list ("0-3,8,10-11") with
// k8s.io/utils/cpuset after checking that every id is within MaxCPUID.
func ParseCPUList(s string) (cpuset.CPUSet, error) {
	for _, field := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == '-' }) {
		n, err := strconv.Atoi(strings.TrimSpace(field))
		if err == nil && (n < 0 || n > MaxCPUID) {
			return cpuset.New(), fmt.Errorf("CPU id %d out of range 0-%d", n, MaxCPUID)
		}
	}
	set, err := cpuset.Parse(s)
	if err != nil {
		return cpuset.New(), fmt.Errorf("invalid CPU list %q: %w", s, err)
	}
	return set, nil
}

// CPUList is a cpuset.CPUSet that travels in JSON as a Linux list string.
type CPUList struct{ cpuset.CPUSet }

// NewCPUList wraps a set.
func NewCPUList(set cpuset.CPUSet) CPUList { return CPUList{set} }

// Set returns the underlying set (never the zero value).
func (l CPUList) Set() cpuset.CPUSet {
	if l.CPUSet.Size() == 0 {
		return cpuset.New()
	}
	return l.CPUSet
}

// MarshalJSON prints the list as a string.
func (l CPUList) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(l.Set().String())), nil
}

// UnmarshalJSON parses a list string.
func (l *CPUList) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("want a CPU list string such as \"0-3,8\", got %s", b)
	}
	set, err := ParseCPUList(s)
	if err != nil {
		return err
	}
	l.CPUSet = set
	return nil
}
