package durable

import (
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"
)

// The coroutine dispatcher. Every coroutine (an orchestrator's main function
// and each ctx.Go branch) is a goroutine, but only one runs at a time: the
// dispatcher resumes them one by one, in creation order, until every one is
// blocked on a condition that is not yet true (a task that is not done). The
// handover happens over channels, so memory is shared safely and `defer`
// behaves as in any Go function.

// coroutine is one cooperatively scheduled goroutine.
type coroutine struct {
	body func()
	// yield carries one token from the coroutine to the dispatcher each time
	// it parks or exits; wake carries one token back. Both have capacity 1 so
	// that neither side blocks on a send, even after the dispatcher gave up
	// on a stuck coroutine.
	yield  chan struct{}
	wake   chan struct{}
	exited chan struct{}

	started bool
	cond    func() bool // the condition the coroutine parked on
	done    atomic.Bool
	killed  atomic.Bool
	panic   *PanicError
}

// dispatcher runs the coroutines of one orchestration execution.
type dispatcher struct {
	coros    []*coroutine
	current  *coroutine
	watchdog time.Duration
	timer    *time.Timer
	stuck    *coroutine
	// halted is set when the orchestration has ended: no coroutine runs again.
	halted bool
}

func newDispatcher(watchdog time.Duration) *dispatcher {
	return &dispatcher{watchdog: watchdog}
}

// spawn adds a coroutine; it first runs in the next (or current) pass of
// runUntilBlocked, after the coroutines created before it.
func (d *dispatcher) spawn(body func()) *coroutine {
	c := &coroutine{
		body:   body,
		yield:  make(chan struct{}, 1),
		wake:   make(chan struct{}, 1),
		exited: make(chan struct{}),
	}
	d.coros = append(d.coros, c)
	return c
}

// errStuck is returned by runUntilBlocked when a coroutine did not yield
// within the watchdog interval.
type errStuck struct{}

func (errStuck) Error() string { return "coroutine did not yield" }

// runUntilBlocked resumes runnable coroutines in creation order until none
// can make progress. It returns the first coroutine that panicked (nil if
// none) and errStuck if a coroutine did not yield in time.
func (d *dispatcher) runUntilBlocked() (*coroutine, error) {
	for {
		progressed := false
		for i := 0; i < len(d.coros); i++ {
			if d.halted {
				return nil, nil
			}
			c := d.coros[i]
			if c.done.Load() {
				continue
			}
			if c.started && !c.cond() {
				continue
			}
			if err := d.resume(c); err != nil {
				return nil, err
			}
			progressed = true
			if c.panic != nil {
				return c, nil
			}
		}
		if !progressed {
			live := d.coros[:0]
			for _, c := range d.coros {
				if !c.done.Load() {
					live = append(live, c)
				}
			}
			clear(d.coros[len(live):])
			d.coros = live
			return nil, nil
		}
	}
}

// resume runs c until it parks or exits.
func (d *dispatcher) resume(c *coroutine) error {
	d.current = c
	defer func() { d.current = nil }()
	if !c.started {
		c.started = true
		go c.run()
	} else {
		c.wake <- struct{}{}
	}
	if d.watchdog <= 0 {
		<-c.yield
		return nil
	}
	if d.timer == nil {
		d.timer = time.NewTimer(d.watchdog)
	} else {
		d.timer.Reset(d.watchdog)
	}
	select {
	case <-c.yield:
		d.timer.Stop()
		return nil
	case <-d.timer.C:
		d.stuck = c
		return errStuck{}
	}
}

func (c *coroutine) run() {
	defer func() {
		if r := recover(); r != nil {
			c.panic = &PanicError{Value: r, Stack: string(debug.Stack())}
		}
		c.done.Store(true)
		close(c.exited)
		c.yield <- struct{}{}
	}()
	c.body()
}

// park blocks the running coroutine until cond holds and the dispatcher
// resumes it. A killed coroutine exits (deferred calls run) instead.
func (c *coroutine) park(cond func() bool) {
	if c.killed.Load() {
		runtime.Goexit()
	}
	c.cond = cond
	c.yield <- struct{}{}
	<-c.wake
	if c.killed.Load() {
		runtime.Goexit()
	}
}

// kill ends every parked coroutine and waits for them to exit. A coroutine
// stuck outside the durable API cannot be stopped; it exits as soon as it
// parks again.
func (d *dispatcher) kill() {
	for _, c := range d.coros {
		if !c.started || c.done.Load() {
			continue
		}
		c.killed.Store(true)
		if c == d.stuck {
			select {
			case c.wake <- struct{}{}:
			default:
			}
			continue
		}
		c.wake <- struct{}{}
		<-c.exited
		// Drain the exit token so the channel is left empty.
		select {
		case <-c.yield:
		default:
		}
	}
	d.coros = nil
	if d.timer != nil {
		d.timer.Stop()
	}
}
