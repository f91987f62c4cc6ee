package api

import (
	"encoding/json"
	"errors"
	"fmt"
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
// {"cpu":"Spread","cpu":"SameCoreFirst"} would pass; sigs.k8s.io/json, the
// API server's decoder, reads exactly and names the field in each case.
func decodeStrict(key, value string, v any) error {
	if len(value) > maxAnnotationValue {
		return fmt.Errorf("%s: value is %d bytes, more than %d", key, len(value), maxAnnotationValue)
	}
	if err := unmarshalJSONStrict([]byte(value), v); err != nil {
		return fmt.Errorf("%s=%s: %w", key, quoteShort(value), err)
	}
	return nil
}

// unmarshalJSONStrict is sigs.k8s.io/json's strict decode with its errors
// on one line (the text ends up in FailedNodes and events), each naming
// the field.
func unmarshalJSONStrict(data []byte, v any) error {
	strictErrs, err := sigsjson.UnmarshalStrict(data, v)
	if isSyntax, offset := sigsjson.SyntaxErrorOffset(err); isSyntax && offset > 0 && json.Valid(data[:offset-1]) {
		// A complete value followed by more than space.
		return errors.New("trailing data after the JSON value")
	}
	if err != nil {
		return errors.New(describeJSONError(err))
	}
	if len(strictErrs) > 0 {
		msgs := make([]string, len(strictErrs))
		for i, e := range strictErrs {
			msgs[i] = e.Error()
		}
		return errors.New(strings.Join(msgs, "; "))
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

// UnmarshalYAMLStrict reads YAML (or JSON) into v strictly, as the API
// server reads a manifest: repeated keys are errors when converting to JSON
// (sigs.k8s.io/yaml's YAMLToJSONStrict), and unknown, repeated and
// case-mismatched fields when decoding it (sigs.k8s.io/json), so
// "MaxExclusiveRatio" does not pass for maxExclusiveRatio.
func UnmarshalYAMLStrict(data []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	return unmarshalJSONStrict(j, v)
}
