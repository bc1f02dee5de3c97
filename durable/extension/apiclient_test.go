package extension

import "testing"

func TestManagementKey(t *testing.T) {
	t.Parallel()
	if got := ManagementKey("configured", "master"); got != "configured" {
		t.Errorf("with a configured system key: %q", got)
	}
	a, b := ManagementKey("", "master"), ManagementKey("", "master")
	if a == "" || a != b || a == "master" {
		t.Errorf("derived keys %q and %q: want the same non-empty key, not the master key", a, b)
	}
	if ManagementKey("", "other master") == a {
		t.Error("two master keys derive the same key")
	}
}
