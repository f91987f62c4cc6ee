// Package reference reads corepin's formats a second time, from the
// contract (docs: /work/shared/design/contract.md, docs/annotations.md,
// docs/extender.md) rather than from package api's code, so that fuzz tests
// can compare the parsers with something that did not share their bugs. It
// is slow and simple on purpose, and imports nothing of corepin (api's own
// tests use it).
package reference

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Verdict is the reference's reading of an input.
type Verdict int

const (
	// Invalid: the contract refuses the input.
	Invalid Verdict = iota
	// Valid: the contract accepts it, with the value read.
	Valid
	// Unsure: the contract does not say (a JSON null where a value is
	// expected): only an accepted value's invariants are checked.
	Unsure
)

func (v Verdict) String() string { return [...]string{"invalid", "valid", "unsure"}[v] }

// CPUList expands a Linux CPU list the way the contract reads one, with
// k8s.io/utils/cpuset's grammar: "" is the empty set, else comma-separated
// elements, each an id or a range a-b with a <= b; an id is decimal digits
// with an optional sign (cpuset reads them with strconv.Atoi) and is from 0
// to max. Each range is expanded id by id. The ids come back sorted
// and unique.
func CPUList(s string, max int) ([]int, bool) {
	if s == "" {
		return []int{}, true
	}
	seen := map[int]bool{}
	for _, elem := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(elem, "-")
		a, ok := cpuID(lo, max)
		if !ok {
			return nil, false
		}
		b := a
		if isRange {
			if b, ok = cpuID(hi, max); !ok || a > b {
				return nil, false
			}
		}
		for id := a; id <= b; id++ {
			seen[id] = true
		}
	}
	ids := make([]int, 0, len(seen))
	for id := range seen {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids, true
}

// cpuID reads an id as strconv.Atoi would, in range: an optional sign,
// then digits ("-0" is 0, as in the range "0--0").
func cpuID(s string, max int) (int, bool) {
	negative := strings.HasPrefix(s, "-")
	if len(s) > 0 && (s[0] == '+' || s[0] == '-') {
		s = s[1:]
	}
	if s == "" {
		return 0, false
	}
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' {
			return 0, false
		}
		n = n*10 + int(r-'0')
		if n > max {
			return 0, false
		}
	}
	if negative && n != 0 {
		return 0, false
	}
	return n, true
}

// FormatCPUList prints sorted unique ids in Linux list format: runs of
// consecutive ids as first-last, single ids alone.
func FormatCPUList(ids []int) string {
	var parts []string
	for i := 0; i < len(ids); {
		j := i
		for j+1 < len(ids) && ids[j+1] == ids[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(ids[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", ids[i], ids[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// null is a JSON null in a document read by readJSON.
type null struct{}

// readJSON reads one JSON value token by token: objects as map[string]any
// (a repeated key is an error, as strict JSON makes it), arrays as []any,
// numbers as json.Number, null as null{}. Trailing data is an error.
func readJSON(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	v, err := readValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing data")
	}
	return v, nil
}

func readValue(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			obj := map[string]any{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				key := k.(string)
				if _, dup := obj[key]; dup {
					return nil, fmt.Errorf("key %q repeated", key)
				}
				if obj[key], err = readValue(dec); err != nil {
					return nil, err
				}
			}
			_, err := dec.Token() // '}'
			return obj, err
		case '[':
			list := []any{}
			for dec.More() {
				v, err := readValue(dec)
				if err != nil {
					return nil, err
				}
				list = append(list, v)
			}
			_, err := dec.Token() // ']'
			return list, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	case nil:
		return null{}, nil
	default:
		return t, nil
	}
}

// reader walks a document, keeping the worst verdict met.
type reader struct{ verdict Verdict }

func (r *reader) refuse() { r.verdict = Invalid }

func (r *reader) unsure() {
	if r.verdict == Valid {
		r.verdict = Unsure
	}
}

// object returns v's members if v is an object whose keys are all among
// keys, exactly (case included).
func (r *reader) object(v any, keys ...string) map[string]any {
	switch o := v.(type) {
	case map[string]any:
		for k := range o {
			if !slices.Contains(keys, k) {
				r.refuse()
			}
		}
		return o
	case null:
		r.unsure()
	default:
		r.refuse()
	}
	return map[string]any{}
}

// integer reads an int member; a missing one is 0.
func (r *reader) integer(obj map[string]any, key string) int {
	switch v := obj[key].(type) {
	case nil:
		return 0
	case json.Number:
		n, err := strconv.ParseInt(string(v), 10, strconv.IntSize)
		if err != nil {
			r.refuse()
		}
		return int(n)
	case null:
		r.unsure()
	default:
		r.refuse()
	}
	return 0
}

// float reads a float64 member; present says whether it was there.
func (r *reader) float(obj map[string]any, key string) (f float64, present bool) {
	switch v := obj[key].(type) {
	case nil:
		return 0, false
	case json.Number:
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil {
			r.refuse()
		}
		return f, true
	case null:
		r.unsure()
	default:
		r.refuse()
	}
	return 0, false
}

func (r *reader) str(obj map[string]any, key string) string {
	switch v := obj[key].(type) {
	case nil:
		return ""
	case string:
		return v
	case null:
		r.unsure()
	default:
		r.refuse()
	}
	return ""
}

func (r *reader) list(obj map[string]any, key string) []any {
	switch v := obj[key].(type) {
	case nil:
		return nil
	case []any:
		return v
	case null:
		r.unsure()
	default:
		r.refuse()
	}
	return nil
}

func (r *reader) cpuList(obj map[string]any, key string, max int) []int {
	if _, ok := obj[key]; !ok {
		return []int{}
	}
	ids, ok := CPUList(r.str(obj, key), max)
	if !ok {
		r.refuse()
	}
	return ids
}

// CPU is one entry of corepin.io/topology's cpus.
type CPU struct{ ID, Core, Socket, NUMA, L3 int }

// IOQueue is one entry of corepin.io/topology's ioQueues.
type IOQueue struct {
	Name string
	CPUs []int
}

// Topology is corepin.io/topology as the reference reads it.
type Topology struct {
	Version  int
	CPUs     []CPU // sorted by id
	Reserved []int
	IOQueues []IOQueue
}

// ReadTopology reads corepin.io/topology (contract section 3): version 1,
// one entry per online CPU with a unique id from 0 to maxCPU and indexes
// >= 0, the threads of a core on one socket, NUMA node and L3 group,
// reserved CPUs and IO queues (named, uniquely) that list online CPUs.
func ReadTopology(s string, maxCPU int) (Topology, Verdict) {
	var t Topology
	doc, err := readJSON(s)
	if err != nil {
		return t, Invalid
	}
	r := &reader{verdict: Valid}
	top := r.object(doc, "version", "cpus", "reserved", "ioQueues")
	t.Version = r.integer(top, "version")
	for _, e := range r.list(top, "cpus") {
		o := r.object(e, "id", "core", "socket", "numa", "l3")
		t.CPUs = append(t.CPUs, CPU{r.integer(o, "id"), r.integer(o, "core"), r.integer(o, "socket"), r.integer(o, "numa"), r.integer(o, "l3")})
	}
	t.Reserved = r.cpuList(top, "reserved", maxCPU)
	for _, e := range r.list(top, "ioQueues") {
		o := r.object(e, "name", "cpus")
		t.IOQueues = append(t.IOQueues, IOQueue{r.str(o, "name"), r.cpuList(o, "cpus", maxCPU)})
	}
	slices.SortStableFunc(t.CPUs, func(a, b CPU) int { return a.ID - b.ID })

	if t.Version != 1 || len(t.CPUs) == 0 {
		r.refuse()
	}
	online := map[int]bool{}
	type place struct{ socket, numa, l3 int }
	coreAt := map[int]place{}
	for _, c := range t.CPUs {
		if c.ID < 0 || c.ID > maxCPU || c.Core < 0 || c.Socket < 0 || c.NUMA < 0 || c.L3 < 0 || online[c.ID] {
			r.refuse()
		}
		online[c.ID] = true
		p := place{c.Socket, c.NUMA, c.L3}
		if old, ok := coreAt[c.Core]; ok && old != p {
			r.refuse()
		}
		coreAt[c.Core] = p
	}
	allOnline := func(ids []int) {
		for _, id := range ids {
			if !online[id] {
				r.refuse()
			}
		}
	}
	allOnline(t.Reserved)
	names := map[string]bool{}
	for _, q := range t.IOQueues {
		if q.Name == "" || names[q.Name] {
			r.refuse()
		}
		names[q.Name] = true
		allOnline(q.CPUs)
	}
	return t, r.verdict
}

// NodePolicy is corepin.io/node-policy as the reference reads it; nil is
// not set.
type NodePolicy struct {
	MaxExclusiveRatio, SharedOvercommit *float64
	SharedHeadroom                      *int
}

// ReadNodePolicy reads corepin.io/node-policy (contract section 3,
// docs/annotations.md): empty means no override; else an object with any
// of maxExclusiveRatio (0 to 1), sharedOvercommit (>= 1) and sharedHeadroom
// (an integer from 0 to 1024).
func ReadNodePolicy(s string) (NodePolicy, Verdict) {
	var p NodePolicy
	if strings.TrimSpace(s) == "" {
		return p, Valid
	}
	doc, err := readJSON(s)
	if err != nil {
		return p, Invalid
	}
	r := &reader{verdict: Valid}
	obj := r.object(doc, "maxExclusiveRatio", "sharedOvercommit", "sharedHeadroom")
	if f, ok := r.float(obj, "maxExclusiveRatio"); ok {
		p.MaxExclusiveRatio = &f
		if !(f >= 0 && f <= 1) {
			r.refuse()
		}
	}
	if f, ok := r.float(obj, "sharedOvercommit"); ok {
		p.SharedOvercommit = &f
		if !(f >= 1) {
			r.refuse()
		}
	}
	if _, ok := obj["sharedHeadroom"]; ok {
		h := r.integer(obj, "sharedHeadroom")
		if _, isNull := obj["sharedHeadroom"].(null); !isNull {
			p.SharedHeadroom = &h
		}
		if h < 0 || h > 1024 {
			r.refuse()
		}
	}
	return p, r.verdict
}

// ConfigKeys checks the keys of the extender's configuration (docs/extender.md,
// "Configuration"), given as JSON (YAML converted as the API machinery
// does): every key must be one the schema names, in its case. It returns
// the paths of the others.
func ConfigKeys(j []byte) ([]string, error) {
	var doc any
	dec := json.NewDecoder(bytes.NewReader(j))
	if err := dec.Decode(&doc); err != nil {
		return nil, err
	}
	var wrong []string
	check := func(v any, path string, keys ...string) map[string]any {
		o, _ := v.(map[string]any)
		for k := range o {
			if !slices.Contains(keys, k) {
				wrong = append(wrong, path+k)
			}
		}
		return o
	}
	top := check(doc, "", "maxExclusiveRatio", "sharedOvercommit", "sharedHeadroom", "scoringStrategy",
		"bindAllNamespaces", "systemNamespaces", "pipelines", "tls")
	pipelines, _ := top["pipelines"].([]any)
	for i, p := range pipelines {
		path := fmt.Sprintf("pipelines[%d].", i)
		po := check(p, path, "name", "selector", "filters")
		sel := check(po["selector"], path+"selector.", "matchLabels", "matchExpressions")
		exprs, _ := sel["matchExpressions"].([]any)
		for j, e := range exprs {
			check(e, fmt.Sprintf("%sselector.matchExpressions[%d].", path, j), "key", "operator", "values")
		}
	}
	check(top["tls"], "tls.", "certFile", "keyFile", "clientCAFile")
	slices.Sort(wrong)
	return wrong, nil
}
