package queue

// SetPollHook makes l call f with the number of messages in flight before
// every poll (tests).
func SetPollHook(l *Listener, f func(inflight int)) { l.onPoll = f }
