package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"

	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// maxAnnotationValue bounds what a strict decoder reads; the API server
// limits all annotations of an object to 256 KiB together.
const maxAnnotationValue = 256 << 10

// decodeStrict decodes one JSON value into v, rejecting unknown fields,
// repeated fields, field names in another case and trailing data. key names
// the annotation (or file) in the error.
//
// encoding/json alone matches field names case-insensitively and lets a
// repeated field overwrite the first, so {"CPU":"Spread"} or
// {"cpu":"Spread","cpu":"SameCoreFirst"} would pass. sigs.k8s.io/json, the
// API server's decoder, reads exactly; encoding/json then only words the
// error of a value it refuses (it names the field and the wanted type).
func decodeStrict(key, value string, v any) error {
	if len(value) > maxAnnotationValue {
		return fmt.Errorf("%s: value is %d bytes, more than %d", key, len(value), maxAnnotationValue)
	}
	strictErrs, err := sigsjson.UnmarshalStrict([]byte(value), v)
	if err == nil && len(strictErrs) == 0 {
		return nil
	}
	if err := decodeStdlib(key, value, v); err != nil {
		return err
	}
	if err == nil {
		// One line: the text ends up in FailedNodes and events.
		msgs := make([]string, len(strictErrs))
		for i, e := range strictErrs {
			msgs[i] = e.Error()
		}
		err = errors.New(strings.Join(msgs, "; "))
	}
	return fmt.Errorf("%s=%s: %s", key, quoteShort(value), describeJSONError(err))
}

// decodeStdlib is encoding/json's strict decode, for its error messages.
func decodeStdlib(key, value string, v any) error {
	dec := json.NewDecoder(bytes.NewReader([]byte(value)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s=%s: %s", key, quoteShort(value), describeJSONError(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s=%s: trailing data after the JSON value", key, quoteShort(value))
	}
	return nil
}

// describeJSONError turns encoding/json's errors into text that names the field.
func describeJSONError(err error) string {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) && typeErr.Field != "" {
		return fmt.Sprintf("field %q: want %s, got JSON %s", typeErr.Field, typeErr.Type, typeErr.Value)
	}
	msg := err.Error()
	const prefix = "json: "
	if len(msg) > len(prefix) && msg[:len(prefix)] == prefix {
		msg = msg[len(prefix):]
	}
	return msg
}

// quoteShort quotes a value for an error message, eliding the middle of long
// values so one bad annotation cannot flood logs and events.
func quoteShort(s string) string {
	const max = 200
	if len(s) > max {
		s = s[:max/2] + "..." + s[len(s)-max/2:]
	}
	return fmt.Sprintf("%q", s)
}

// fieldError names the annotation key, the JSON field and the offending value.
func fieldError(key, field string, value any, why string) error {
	return fmt.Errorf("%s: field %q: %s (got %v)", key, field, why, value)
}

// UnmarshalYAMLStrict reads YAML (or JSON) into v strictly: unknown and
// repeated keys are errors (sigs.k8s.io/yaml's UnmarshalStrict), and so are
// keys in another case than the field's, which its encoding/json decoder
// would take ("MaxExclusiveRatio" for maxExclusiveRatio).
func UnmarshalYAMLStrict(data []byte, v any) error {
	if err := yaml.UnmarshalStrict(data, v); err != nil {
		return err
	}
	// The document decoded; now look for keys that only matched a field
	// case-insensitively, walking the document against v's type (a typed
	// exact-case decode would stop at the first number written for a
	// string, which the YAML reader above converts).
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return err
	}
	var doc any
	if err := json.Unmarshal(j, &doc); err != nil {
		return err
	}
	var wrong []string
	fieldCase(doc, reflect.TypeOf(v), "", &wrong)
	if len(wrong) > 0 {
		slices.Sort(wrong)
		return fmt.Errorf("unknown field %s", strings.Join(wrong, ", unknown field "))
	}
	return nil
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// fieldCase appends to wrong the paths of the object keys in doc that name
// a field of t only in another case.
func fieldCase(doc any, t reflect.Type, path string, wrong *[]string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return // its own format (quantities, times, raw objects)
	}
	switch t.Kind() {
	case reflect.Struct:
		obj, ok := doc.(map[string]any)
		if !ok {
			return
		}
		fields := jsonFields(t)
		for key, value := range obj {
			if f, ok := fields[key]; ok {
				fieldCase(value, f, join(path, key), wrong)
				continue
			}
			for name := range fields {
				if strings.EqualFold(name, key) {
					*wrong = append(*wrong, strconv.Quote(join(path, key)))
					break
				}
			}
		}
	case reflect.Slice, reflect.Array:
		if list, ok := doc.([]any); ok {
			for i, item := range list {
				fieldCase(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), wrong)
			}
		}
	case reflect.Map:
		if obj, ok := doc.(map[string]any); ok {
			for key, value := range obj {
				fieldCase(value, t.Elem(), join(path, key), wrong)
			}
		}
	}
}

// jsonFields maps a struct's JSON field names to their types, with the
// fields of embedded structs without a name promoted, as encoding/json does.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || (!f.IsExported() && !f.Anonymous) {
			continue
		}
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					if _, ok := out[k]; !ok {
						out[k] = v
					}
				}
				continue
			}
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
