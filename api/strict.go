package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// maxAnnotationValue bounds what a strict decoder reads; the API server
// limits all annotations of an object to 256 KiB together.
const maxAnnotationValue = 256 << 10

// decodeStrict decodes one JSON value into v, rejecting unknown fields and
// trailing data. key names the annotation (or file) in the error.
func decodeStrict(key, value string, v any) error {
	if len(value) > maxAnnotationValue {
		return fmt.Errorf("%s: value is %d bytes, more than %d", key, len(value), maxAnnotationValue)
	}
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
