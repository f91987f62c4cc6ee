package extender

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// readPreemptionArgs reads and decodes a preemption body, read into one
// string of the announced length (the UIDs point into it).
func readPreemptionArgs(r *http.Request) (*preemptionArgs, error) {
	var body strings.Builder
	if n := r.ContentLength; n > 0 && n <= maxBody {
		body.Grow(int(n))
	}
	if _, err := io.Copy(&body, http.MaxBytesReader(nil, r.Body, maxBody)); err != nil {
		return nil, fmt.Errorf("malformed request body: %w", err)
	}
	return decodePreemptionArgs(body.String())
}

// decodePreemptionArgs decodes a preemption body in one pass that also
// validates it, with encoding/json's rules (keys matched without regard to
// case, the last of repeated keys kept, unknown keys ignored, null for
// "none", nothing after the value). encoding/json scanned a body twice (to
// find its end, then to skip what a decoder of its own takes) and built
// every proposed victim by reflection: with 30 victims on each of 1,000
// nodes, 1.5 MB, that took longer than choosing the victims
// (BenchmarkPreemptionArgs: 4.5 to 8 times the scanner's time, 22 times its
// allocations). The pod (a few KB) is still decoded by encoding/json;
// NodeNameToVictims (whole pods, sent only without nodeCacheCapable) too.
// FuzzPreemptionArgs compares it with encoding/json.
func decodePreemptionArgs(data string) (*preemptionArgs, error) {
	s := &jsonScanner{s: data}
	args := &preemptionArgs{}
	s.ws()
	if s.i == len(s.s) {
		return nil, errors.New("malformed request body: empty")
	}
	switch s.s[s.i] {
	case 'n':
		if err := s.literal("null"); err != nil {
			return nil, err
		}
	case '{':
		err := s.object(func(key string) error {
			switch {
			case strings.EqualFold(key, "Pod"):
				raw, err := s.raw()
				if err != nil {
					return err
				}
				if err := json.Unmarshal([]byte(raw), &args.Pod); err != nil {
					return fmt.Errorf("malformed request body: Pod: %w", err)
				}
				return nil
			case strings.EqualFold(key, "NodeNameToMetaVictims"):
				return s.metaVictimsMap(&args.NodeNameToMetaVictims)
			case strings.EqualFold(key, "NodeNameToVictims"):
				raw, err := s.raw()
				if err != nil {
					return err
				}
				if err := json.Unmarshal([]byte(raw), &args.NodeNameToVictims); err != nil {
					return fmt.Errorf("malformed request body: NodeNameToVictims: %w", err)
				}
				return nil
			}
			return s.skip()
		})
		if err != nil {
			return nil, err
		}
	default:
		if err := s.skip(); err != nil {
			return nil, err
		}
		return nil, errors.New("malformed request body: want a JSON object")
	}
	s.ws()
	if s.i != len(s.s) {
		return nil, errors.New("malformed request body: trailing data after the JSON value")
	}
	return args, nil
}

// metaVictimsMap decodes NodeNameToMetaVictims into *m (merging into a map
// already there, as encoding/json does for a repeated key).
func (s *jsonScanner) metaVictimsMap(m *map[string]*extenderv1.MetaVictims) error {
	s.ws()
	if s.peek() == 'n' {
		*m = nil
		return s.literal("null")
	}
	if s.peek() != '{' {
		return s.typeError("NodeNameToMetaVictims", "an object of node names")
	}
	if *m == nil {
		*m = map[string]*extenderv1.MetaVictims{}
	}
	return s.object(func(node string) error {
		s.ws()
		switch s.peek() {
		case 'n':
			(*m)[node] = nil
			return s.literal("null")
		case '{':
		default:
			return s.typeError(fmt.Sprintf("NodeNameToMetaVictims[%q]", node), "an object")
		}
		v := &extenderv1.MetaVictims{}
		(*m)[node] = v
		return s.object(func(key string) error {
			switch {
			case strings.EqualFold(key, "Pods"):
				return s.metaPods(node, &v.Pods)
			case strings.EqualFold(key, "NumPDBViolations"):
				s.ws()
				if s.peek() == 'n' {
					return s.literal("null")
				}
				if c := s.peek(); c != '-' && (c < '0' || c > '9') {
					return s.typeError(fmt.Sprintf("NodeNameToMetaVictims[%q].NumPDBViolations", node), "an integer")
				}
				start := s.i
				if err := s.number(); err != nil {
					return err
				}
				n, err := strconv.ParseInt(s.s[start:s.i], 10, 64)
				if err != nil {
					return fmt.Errorf("malformed request body: NodeNameToMetaVictims[%q].NumPDBViolations: want an integer, got %s", node, s.s[start:s.i])
				}
				v.NumPDBViolations = n
				return nil
			}
			return s.skip()
		})
	})
}

// metaPods decodes a MetaVictims.Pods array into one slice of MetaPods.
func (s *jsonScanner) metaPods(node string, l *[]*extenderv1.MetaPod) error {
	s.ws()
	if s.peek() == 'n' {
		*l = nil
		return s.literal("null")
	}
	if s.peek() != '[' {
		return s.typeError(fmt.Sprintf("NodeNameToMetaVictims[%q].Pods", node), `an array of {"UID": ...}`)
	}
	entries := s.entries[:0]
	defer func() { s.entries = entries[:0] }()
	err := s.array(func(i int) error {
		s.ws()
		switch s.peek() {
		case 'n':
			entries = append(entries, metaPodEntry{null: true})
			return s.literal("null")
		case '{':
		default:
			return s.typeError(fmt.Sprintf("NodeNameToMetaVictims[%q].Pods[%d]", node, i), `an object {"UID": ...}`)
		}
		// What kube-scheduler sends, {"UID":"..."} with a plain UID, is
		// read at once; anything else as any object.
		if rest, ok := strings.CutPrefix(s.s[s.i:], `{"UID":"`); ok {
			if end := strings.IndexByte(rest, '"'); end >= 0 && end+1 < len(rest) && rest[end+1] == '}' && plainString(rest[:end]) {
				entries = append(entries, metaPodEntry{uid: rest[:end]})
				s.i += len(`{"UID":"`) + end + 2
				return nil
			}
		}
		var e metaPodEntry
		err := s.object(func(key string) error {
			if !strings.EqualFold(key, "UID") {
				return s.skip()
			}
			s.ws()
			switch s.peek() {
			case 'n':
				return s.literal("null") // leaves a string as it was
			case '"':
				uid, err := s.str()
				e.uid = uid
				return err
			}
			return s.typeError(fmt.Sprintf("NodeNameToMetaVictims[%q].Pods[%d].UID", node, i), "a string")
		})
		entries = append(entries, e)
		return err
	})
	if err != nil {
		return err
	}
	pods := make([]extenderv1.MetaPod, len(entries))
	out := make([]*extenderv1.MetaPod, len(entries))
	for j, e := range entries {
		if !e.null {
			pods[j].UID = e.uid
			out[j] = &pods[j]
		}
	}
	*l = out
	return nil
}

// metaPodEntry is one element of a Pods array while it is read.
type metaPodEntry struct {
	uid  string
	null bool
}

// plainString reports whether s, the inside of a JSON string, is its own
// value: printable ASCII without escapes.
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '\\' {
			return false
		}
	}
	return true
}

// jsonScanner reads JSON from s, validating as it goes: what it accepts is
// what encoding/json accepts (FuzzPreemptionArgs).
type jsonScanner struct {
	s string
	i int
	// entries is reused from one Pods array to the next.
	entries []metaPodEntry
	// depth counts the objects and arrays open; like encoding/json, more
	// than maxDepth is an error.
	depth int
}

const maxDepth = 10000

// enter opens an object or array at s.i.
func (s *jsonScanner) enter() error {
	if s.depth++; s.depth > maxDepth {
		return fmt.Errorf("malformed request body: exceeded max depth at offset %d", s.i)
	}
	s.i++
	return nil
}

func (s *jsonScanner) ws() {
	for s.i < len(s.s) {
		switch s.s[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek is the next byte, 0 at the end.
func (s *jsonScanner) peek() byte {
	if s.i < len(s.s) {
		return s.s[s.i]
	}
	return 0
}

func (s *jsonScanner) syntax(what string) error {
	if s.i >= len(s.s) {
		return fmt.Errorf("malformed request body: unexpected end of JSON input (%s)", what)
	}
	return fmt.Errorf("malformed request body: invalid character %q at offset %d (%s)", s.s[s.i], s.i, what)
}

// typeError reports a value of the wrong kind for field, once the value is
// known to be valid JSON (encoding/json reports syntax first).
func (s *jsonScanner) typeError(field, want string) error {
	start := s.i
	if err := s.skip(); err != nil {
		return err
	}
	return fmt.Errorf("malformed request body: %s: want %s, got %.40s", field, want, s.s[start:s.i])
}

func (s *jsonScanner) literal(word string) error {
	if !strings.HasPrefix(s.s[s.i:], word) {
		return s.syntax("in literal " + word)
	}
	s.i += len(word)
	return nil
}

// object reads an object, calling member with each key with the scanner
// at the key's value, which member must consume.
func (s *jsonScanner) object(member func(key string) error) error {
	if err := s.enter(); err != nil {
		return err
	}
	s.ws()
	if s.peek() == '}' {
		s.i++
		s.depth--
		return nil
	}
	for {
		s.ws()
		if s.peek() != '"' {
			return s.syntax("looking for the beginning of an object key")
		}
		key, err := s.str()
		if err != nil {
			return err
		}
		s.ws()
		if s.peek() != ':' {
			return s.syntax("after an object key")
		}
		s.i++
		s.ws()
		if err := member(key); err != nil {
			return err
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			s.depth--
			return nil
		default:
			return s.syntax("after an object key:value pair")
		}
	}
}

// array reads an array, calling elem for each element with the scanner at
// it, which elem must consume.
func (s *jsonScanner) array(elem func(i int) error) error {
	if err := s.enter(); err != nil {
		return err
	}
	s.ws()
	if s.peek() == ']' {
		s.i++
		s.depth--
		return nil
	}
	for n := 0; ; n++ {
		s.ws()
		if err := elem(n); err != nil {
			return err
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			s.depth--
			return nil
		default:
			return s.syntax("after an array element")
		}
	}
}

// raw consumes a value and returns its text.
func (s *jsonScanner) raw() (string, error) {
	s.ws()
	start := s.i
	err := s.skip()
	return s.s[start:s.i], err
}

// skip consumes and validates one value.
func (s *jsonScanner) skip() error {
	s.ws()
	switch c := s.peek(); {
	case c == '{':
		return s.object(func(string) error { return s.skip() })
	case c == '[':
		return s.array(func(int) error { return s.skip() })
	case c == '"':
		_, err := s.str()
		return err
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	}
	return s.syntax("looking for the beginning of a value")
}

// number consumes -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?.
func (s *jsonScanner) number() error {
	digits := func() int {
		n := 0
		for s.i < len(s.s) && s.s[s.i] >= '0' && s.s[s.i] <= '9' {
			s.i++
			n++
		}
		return n
	}
	if s.peek() == '-' {
		s.i++
	}
	switch c := s.peek(); {
	case c == '0':
		s.i++
	case c >= '1' && c <= '9':
		digits()
	default:
		return s.syntax("in numeric literal")
	}
	if s.peek() == '.' {
		s.i++
		if digits() == 0 {
			return s.syntax("after decimal point in numeric literal")
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if digits() == 0 {
			return s.syntax("in exponent of numeric literal")
		}
	}
	return nil
}

// str consumes a string and returns its value: a substring of the input
// when it is plain ASCII without escapes, else what encoding/json makes of
// it.
func (s *jsonScanner) str() (string, error) {
	start := s.i
	plain := true
	for s.i++; s.i < len(s.s); s.i++ {
		switch c := s.s[s.i]; {
		case c == '"':
			s.i++
			if plain {
				return s.s[start+1 : s.i-1], nil
			}
			return unquote(s.s[start:s.i])
		case c == '\\':
			plain = false
			s.i++
			switch s.peek() {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				for k := 0; k < 4; k++ {
					s.i++
					if c := s.peek(); !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
						return "", s.syntax("in \\u hexadecimal character escape")
					}
				}
			default:
				return "", s.syntax("in string escape code")
			}
		case c < 0x20:
			return "", s.syntax("in string literal")
		case c >= 0x80:
			plain = false
		}
	}
	return "", s.syntax("in string literal")
}

// unquote decodes a JSON string with escapes or non-ASCII bytes (which no
// valid name has, and encoding/json would replace when not UTF-8). It is a
// function of its own so that the common path's strings do not escape.
func unquote(quoted string) (string, error) {
	var s string
	if err := json.Unmarshal([]byte(quoted), &s); err != nil {
		return "", err
	}
	return s, nil
}
