package durable

import (
	"encoding/json"
	"fmt"
)

// encodeJSON turns a Go value into the JSON text stored in history ("" for
// nil). A json.RawMessage, or a []byte holding valid JSON, is passed through
// as is, so raw JSON from the HTTP API is not encoded twice.
func encodeJSON(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case json.RawMessage:
		if len(x) == 0 {
			return "", nil
		}
		if !json.Valid(x) {
			return "", fmt.Errorf("json.RawMessage is not valid JSON")
		}
		return string(x), nil
	case []byte:
		if len(x) == 0 {
			return "", nil
		}
		if json.Valid(x) {
			return string(x), nil
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	return string(b), nil
}

// decodeJSON decodes a stored JSON text into out (nil out: discard; ""
// decodes as null).
func decodeJSON(s string, out any) error {
	if out == nil {
		return nil
	}
	if rm, ok := out.(*json.RawMessage); ok {
		if s == "" {
			*rm = nil
		} else {
			*rm = append((*rm)[:0], s...)
		}
		return nil
	}
	if s == "" {
		s = "null"
	}
	return json.Unmarshal([]byte(s), out)
}
