package config

import (
	"strings"
	"testing"
)

func TestTypeErrorMessageIsReadable(t *testing.T) {
	t.Parallel()
	_, err := Load(writeRoot(t, map[string]string{HostFileName: `{"version":"2.0","functionTimeout":5}`}))
	if err == nil || !strings.Contains(err.Error(), "field functionTimeout: expected a string, got value 5") {
		t.Fatalf("error = %v", err)
	}
}
