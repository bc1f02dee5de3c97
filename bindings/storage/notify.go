package storage

import (
	"sync"
	"weak"

	"github.com/stratus-dev/stratus/bindings/azstorage"
)

// Notifier is an in-process publish/subscribe hub for "this process just
// wrote something" events on one storage account: a queue output that
// enqueued a message wakes the local queue listeners of that queue, and a
// blob output that wrote a blob tells the local blob listeners of that
// container, so they act at once instead of at their next poll.
//
// Notifications are hints only: a listener that misses one still finds the
// work at its next poll. Subscriber callbacks run on the publisher's
// goroutine and must not block.
type Notifier struct {
	mu   sync.Mutex
	next int
	subs map[string]map[int]func(detail string)
}

// Topics.
const (
	topicQueue = "queue/"
	topicBlob  = "blob/"
)

// QueueTopic is the topic of messages enqueued to a queue.
func QueueTopic(queue string) string { return topicQueue + queue }

// BlobTopic is the topic of blobs written to a container; the detail is the
// blob name.
func BlobTopic(container string) string { return topicBlob + container }

// Subscribe calls fn for every Publish on topic until cancel is called.
func (n *Notifier) Subscribe(topic string, fn func(detail string)) (cancel func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.subs == nil {
		n.subs = map[string]map[int]func(string){}
	}
	if n.subs[topic] == nil {
		n.subs[topic] = map[int]func(string){}
	}
	id := n.next
	n.next++
	n.subs[topic][id] = fn
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		delete(n.subs[topic], id)
		if len(n.subs[topic]) == 0 {
			delete(n.subs, topic)
		}
	}
}

// Publish calls every subscriber of topic with detail.
func (n *Notifier) Publish(topic, detail string) {
	n.mu.Lock()
	fns := make([]func(string), 0, len(n.subs[topic]))
	for _, fn := range n.subs[topic] {
		fns = append(fns, fn)
	}
	n.mu.Unlock()
	for _, fn := range fns {
		fn(detail)
	}
}

var (
	notifiersMu sync.Mutex
	notifiers   = map[weak.Pointer[azstorage.Clients]]*Notifier{}
)

// NotifierFor returns the notifier of one set of storage clients. A host
// caches one *azstorage.Clients per connection, so every binding and trigger
// of that host shares one notifier per account, while two hosts built in one
// test process (each with its own clients) do not see each other's events.
// Entries die with their clients.
func NotifierFor(c *azstorage.Clients) *Notifier {
	key := weak.Make(c)
	notifiersMu.Lock()
	defer notifiersMu.Unlock()
	if n, ok := notifiers[key]; ok {
		return n
	}
	// Drop entries whose clients were collected.
	for k := range notifiers {
		if k.Value() == nil {
			delete(notifiers, k)
		}
	}
	n := &Notifier{}
	notifiers[key] = n
	return n
}
