package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"

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
		err = errors.Join(strictErrs...)
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
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return err
	}
	// A second, exact-case read into a scratch value only to find such
	// keys; a type error there is one the first read's YAML-aware
	// conversions resolved, not the user's.
	scratch := reflect.New(reflect.TypeOf(v).Elem()).Interface()
	strictErrs, err := sigsjson.UnmarshalStrict(j, scratch, sigsjson.DisallowUnknownFields)
	if err == nil && len(strictErrs) > 0 {
		return errors.Join(strictErrs...)
	}
	return nil
}
