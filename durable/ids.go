package durable

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode"
)

// ValidateInstanceID applies the Durable Functions rules to an instance id:
// not empty, at most 256 characters, no leading '@' (reserved for entities),
// and none of '/', '\', '#', '?' or control characters. Errors match
// [ErrInvalidInstanceID].
func ValidateInstanceID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: instance id must not be empty", ErrInvalidInstanceID)
	case len(id) > 256:
		return fmt.Errorf("%w: instance id is %d characters long; the limit is 256", ErrInvalidInstanceID, len(id))
	case strings.HasPrefix(id, "@"):
		return fmt.Errorf("%w: instance id must not start with '@' (reserved for entities)", ErrInvalidInstanceID)
	}
	for _, r := range id {
		if r == '/' || r == '\\' || r == '#' || r == '?' || unicode.IsControl(r) {
			return fmt.Errorf("%w: instance id %q contains %q; '/', '\\', '#', '?' and control characters are not allowed", ErrInvalidInstanceID, id, r)
		}
	}
	return nil
}

// newGUIDN returns a random GUID as 32 lower-case hex digits (.NET "N").
func newGUIDN() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return hex.EncodeToString(b[:])
}

// urlNamespace is RFC 4122's URL namespace, which Durable Functions uses for
// NewGuid.
var urlNamespace = [16]byte{0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}

// uuidV5 returns the name-based (SHA-1) UUID of name in namespace ns, in the
// 8-4-4-4-12 form.
func uuidV5(ns [16]byte, name string) string {
	h := sha1.New()
	h.Write(ns[:])
	h.Write([]byte(name))
	sum := h.Sum(nil)
	var u [16]byte
	copy(u[:], sum[:16])
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	s := hex.EncodeToString(u[:])
	return s[0:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:32]
}
