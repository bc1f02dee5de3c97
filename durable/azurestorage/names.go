package azurestorage

import (
	"fmt"
	"regexp"
	"strings"
)

var hubNameRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9]{2,44}$`)

// ValidateHubName checks a task hub name: 3-45 letters and digits, starting
// with a letter (valid as a queue, table and container name prefix).
func ValidateHubName(h string) error {
	if !hubNameRE.MatchString(h) {
		return fmt.Errorf("task hub name %q must be 3-45 letters and digits, starting with a letter", h)
	}
	return nil
}

// names are the storage resource names of one hub.
type names struct {
	hub            string
	controlQueues  []string
	workItemQueue  string
	poisonQueue    string
	historyTable   string
	instancesTable string
	leaseContainer string
	largeContainer string
}

func newNames(hub string, partitions int) names {
	h := strings.ToLower(hub)
	n := names{
		hub:            hub,
		workItemQueue:  h + "-workitems",
		poisonQueue:    h + "-poison",
		historyTable:   hub + "History",
		instancesTable: hub + "Instances",
		leaseContainer: h + "-leases",
		largeContainer: h + "-largemessages",
	}
	for i := range partitions {
		n.controlQueues = append(n.controlQueues, fmt.Sprintf("%s-control-%02d", h, i))
	}
	return n
}

// fnv1a32 is the FNV-1a hash DurableTask.AzureStorage routes instances with.
func fnv1a32(s string) uint32 {
	h := uint32(0x811c9dc5)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 0x01000193
	}
	return h
}

// partitionOf returns the control queue index of an instance.
func partitionOf(instanceID string, partitions int) int {
	return int(fnv1a32(instanceID) % uint32(partitions))
}

// escapeKey makes an instance id safe as a PartitionKey, as
// DurableTask.AzureStorage's KeySanitation does.
func escapeKey(id string) string {
	if !strings.ContainsAny(id, "^/\\#?") && !hasControl(id) {
		return id
	}
	var b strings.Builder
	for _, r := range id {
		switch {
		case r == '^':
			b.WriteString("^^")
		case r == '/':
			b.WriteString("^0")
		case r == '\\':
			b.WriteString("^1")
		case r == '#':
			b.WriteString("^2")
		case r == '?':
			b.WriteString("^3")
		case r <= 0x1f || r >= 0x7f && r <= 0x9f:
			b.WriteRune('^')
			b.WriteRune(r + 0xc0)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// unescapeKey reverses escapeKey.
func unescapeKey(k string) string {
	if !strings.Contains(k, "^") {
		return k
	}
	var b strings.Builder
	rs := []rune(k)
	for i := 0; i < len(rs); i++ {
		if rs[i] != '^' || i+1 >= len(rs) {
			b.WriteRune(rs[i])
			continue
		}
		i++
		switch c := rs[i]; c {
		case '^':
			b.WriteRune('^')
		case '0':
			b.WriteRune('/')
		case '1':
			b.WriteRune('\\')
		case '2':
			b.WriteRune('#')
		case '3':
			b.WriteRune('?')
		default:
			b.WriteRune(c - 0xc0)
		}
	}
	return b.String()
}

func hasControl(s string) bool {
	for _, r := range s {
		if r <= 0x1f || r >= 0x7f && r <= 0x9f {
			return true
		}
	}
	return false
}

// rowKey is the History table RowKey of event index i.
func rowKey(i int) string { return fmt.Sprintf("%016X", i) }

// odataString quotes s for an OData filter.
func odataString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
