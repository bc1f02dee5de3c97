package httptrigger

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"strings"

	"github.com/stratus-dev/stratus/host/config"
)

// Key settings. Keys are app settings so that they can come from the
// environment in a container or from local.settings.json in development.
const (
	// MasterKeySetting holds the master (admin) key.
	MasterKeySetting = "FUNCTIONS_MASTER_KEY"
	// HostKeysSetting holds comma-separated host keys, valid for every
	// function-level function.
	HostKeysSetting = "FUNCTIONS_HOST_KEYS"
	// FunctionKeysSettingPrefix + function name holds comma-separated keys
	// valid for that function only.
	FunctionKeysSettingPrefix = "FUNCTIONS_KEYS_"
	// SystemKeySettingPrefix + extension name holds a system key, e.g.
	// FUNCTIONS_SYSTEM_KEY_durabletask_extension.
	SystemKeySettingPrefix = "FUNCTIONS_SYSTEM_KEY_"
)

// Keys checks request keys. The zero value accepts nothing but anonymous calls.
type Keys struct {
	// Disabled turns key checks off (local development, like Core Tools).
	Disabled bool
	master   string
	host     []string
	settings *config.Settings
	// Generated is true when no master key was configured and one was made up
	// for this process.
	Generated bool
}

// LoadKeys reads keys from app settings. Without a configured master key, a
// random one is generated for this process (see Keys.Master).
func LoadKeys(s *config.Settings, disabled bool) *Keys {
	k := &Keys{Disabled: disabled, settings: s, master: s.Get(MasterKeySetting), host: splitKeys(s.Get(HostKeysSetting))}
	if k.master == "" {
		var b [32]byte
		_, _ = rand.Read(b[:])
		k.master = base64.RawURLEncoding.EncodeToString(b[:])
		k.Generated = true
	}
	return k
}

// Master returns the master key.
func (k *Keys) Master() string { return k.master }

func splitKeys(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// RequestKey returns the key a request presents: the x-functions-key header
// wins over the code query parameter.
func RequestKey(r *http.Request) string {
	if h := r.Header.Get("x-functions-key"); h != "" {
		return h
	}
	return r.URL.Query().Get("code")
}

func equal(a, b string) bool {
	return len(a) > 0 && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// IsMaster reports whether key is the master key (constant-time).
func (k *Keys) IsMaster(key string) bool { return equal(key, k.master) }

// IsSystem reports whether key is the master key or the named extension's
// system key.
func (k *Keys) IsSystem(key, extension string) bool {
	if k.IsMaster(key) {
		return true
	}
	if k.settings == nil {
		return false
	}
	return equal(key, k.settings.Get(SystemKeySettingPrefix+extension))
}

// Authorize reports whether key satisfies level for function fn.
func (k *Keys) Authorize(level AuthLevel, fn, key string) bool {
	if k.Disabled || level == Anonymous {
		return true
	}
	if k.IsMaster(key) {
		return true
	}
	if level == AdminLevel {
		return false
	}
	ok := false
	for _, h := range k.host {
		ok = equal(key, h) || ok
	}
	if k.settings != nil {
		for _, f := range splitKeys(k.settings.Get(FunctionKeysSettingPrefix + fn)) {
			ok = equal(key, f) || ok
		}
	}
	return ok
}
