// Package durable is Stratus's durable engine as users see it: the Go API for
// writing orchestrators and activities ([Orchestrator], [ActivityFunc],
// [OrchestrationContext], [Task]), the replay runtime that runs them
// ([Worker]), and the durable client that starts and controls instances
// ([Client]). History events live in durable/history, the storage contract in
// durable/backend, the Azure Storage task hub in durable/azurestorage, and an
// in-memory task hub for tests in durable/backend/memory.
//
// # Orchestrators
//
// An orchestrator is a Go function of an [OrchestrationContext]. Calls return
// a [Task]; Await blocks until it is done:
//
//	func helloSequence(ctx *durable.OrchestrationContext, _ any) ([]string, error) {
//		var out []string
//		for _, city := range []string{"Tokyo", "Seattle", "London"} {
//			g, err := durable.Await[string](ctx.CallActivity("SayHello", city))
//			if err != nil {
//				return nil, err
//			}
//			out = append(out, g)
//		}
//		return out, nil
//	}
//
// The runtime records every call and result in the instance's history and
// re-executes (replays) the orchestrator against that history whenever it has
// to rebuild its state, so orchestrator code must follow these rules:
//
//   - Be deterministic: given the same history, make the same calls in the
//     same order. A replayed call that does not match history fails the
//     instance with a [NonDeterminismError] naming the function, the
//     position and both calls.
//   - Do not start goroutines, use select, channels, mutexes, time.Sleep or
//     time.Now, do I/O, or range over maps (their order changes between
//     runs). Use [OrchestrationContext.Go] for concurrency,
//     [OrchestrationContext.CreateTimer] or [OrchestrationContext.Sleep] to
//     wait, [OrchestrationContext.CurrentUTCTime] for the time,
//     [OrchestrationContext.NewGUID] for ids, and activities for I/O. An
//     orchestrator that blocks outside the durable API for longer than
//     WorkerOptions.DeadlockTimeout fails with a [DeadlockError].
//   - Use [OrchestrationContext.Logger] to log: it is muted while replaying.
//   - End with ContinueAsNew by returning it: return nil, ctx.ContinueAsNew(x).
//   - Change orchestrator code only in ways that keep running instances'
//     histories valid, or use a new orchestrator name.
//
// Names of orchestrators, activities and events are explicit strings, never
// derived from Go function names, so renaming Go code does not break
// history. External event names match case-insensitively, as in Durable
// Functions.
//
// # Coroutines, WhenAll and WhenAny
//
// Each orchestrator runs on a cooperative dispatcher: its main function and
// every branch started with [OrchestrationContext.Go] is a goroutine, but only
// one runs at a time. They are resumed in creation order, each until it
// awaits something not yet done, so interleaving is deterministic and defer
// works as usual. [OrchestrationContext.WhenAll] waits for all tasks and joins
// their errors; [OrchestrationContext.WhenAny] returns the first task done.
// When several tasks are done at once (completed by events of the same batch
// or already before the call), the one whose completion is earliest in
// history wins, so the choice is the same on every replay.
//
// # Activities
//
// Activities do the real work and may do anything. They receive their input
// as JSON and a context that is cancelled when the worker shuts down;
// [ActivityInfoFrom] gives the instance id and an idempotency key that is
// the same for every retry and redelivery of one call and different for
// every other call. Activities run at least once: a crash or shutdown before
// the result is committed runs the call again.
//
// # Retries, timers and events
//
// [WithRetry] retries failed calls inside the orchestrator: every attempt
// and every back-off timer is in history, as in Durable Functions. Timers are
// sent to the backend as a single TimerFired message visible at FireAt, even
// for long timers; a backend whose queues cannot delay that long (Azure
// Storage caps visibility at 7 days) must re-delay early arrivals itself.
// External events that arrive before the orchestrator waits are buffered
// first in first out per name and never dropped; with [WithTimeout] the wait
// races a durable timer, and the timer of an event that won is simply
// ignored when it fires.
//
// # Entities
//
// An entity ([EntityFunc], [Entity], registered with [RegisterEntity]) is
// a small piece of named state, "@name@key" ([EntityID]; the name is lower
// case), that runs one operation at a time. Clients signal entities
// ([Client.SignalEntity], optionally at a later time) and read their state
// ([Client.ReadEntityState], [Client.ListEntities]); orchestrations call
// them and await the result ([OrchestrationContext.CallEntity]), signal
// them, and lock several for a critical section
// ([OrchestrationContext.LockEntities]): locks are taken one entity at a
// time in sorted order, so sections cannot deadlock; while locked, an
// entity runs only the holder's requests and queues the others; the locks
// are released by unlock or when the orchestration ends in any way.
//
// Entities are instances of the task hub like orchestrations and use the
// Durable Functions wire format: requests and responses are EventRaised
// events, and after each batch of operations the entity continues as new
// with its scheduler state (state, queue, lock holder, message sorter) as
// the input of the next execution. A failing operation rolls back its
// state changes and the messages it sent, and a caller gets an
// [EntityOperationFailedError]. Requests from orchestrations and entities
// carry the sender's timestamps, so the entity runs them in the order they
// were sent and drops redelivered copies; requests from clients carry ids,
// the last 500 of which the entity remembers to drop copies. Operations
// are applied exactly once to the state; an entity function's own side
// effects (I/O) may repeat if a batch is retried before it is committed.
//
// # Control
//
// Terminate ends an instance as Terminated, even while it is suspended.
// While an instance is suspended it processes no events other than resume
// and terminate; the others are handed back to the backend (Carryover) and
// processed after resume. Events for finished instances are ignored and
// counted. ContinueAsNew starts the next execution within the same work
// item, with a new execution id and a fresh history; calls that were
// started and not awaited are abandoned (events sent with SendEvent are
// still delivered).
//
// # JSON
//
// Inputs, outputs, event data and custom status are JSON. A json.RawMessage,
// or a []byte holding valid JSON, is passed through as is (no double
// encoding); a nil value is stored as no value ("").
//
// # Worker and cache
//
// The [Worker] fetches work items from a backend.Backend with bounded
// concurrency. Between work items it keeps running orchestrations parked in
// an LRU cache keyed by instance, valid while the execution id and the
// history length it has seen match the work item; otherwise it replays from
// history. Either path gives the same result.
package durable
