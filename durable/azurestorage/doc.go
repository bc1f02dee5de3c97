// Package azurestorage is the durable task hub on Azure Storage (or
// Azurite): it implements backend.Backend with the resources, message
// envelope and table layout of DurableTask.AzureStorage, so that existing
// task hub tools (Durable Functions Monitor, Storage Explorer) read a
// Stratus hub, and several host processes can share one hub.
//
// # Layout
//
// For hub H (h = lower-cased H): control queues h-control-00 … (one per
// partition, PartitionCount 1-16, instances routed by FNV-1a of the
// instance id), the activity queue h-workitems, tables HHistory and
// HInstances, the containers h-leases (taskhub.json and the partition
// leases) and h-largemessages. Queue messages are the MessageData envelope
// with "$type" first, written as raw UTF-8 JSON (base64 is accepted on
// read). History rows use the escaped instance id as PartitionKey and the
// event index as 16 hex digits as RowKey, with DurableTask.Core's columns
// (EventType as the enum name, _Timestamp, ExecutionId, the per-type
// columns, complex values as JSON strings); a "sentinel" row per instance
// holds ExecutionId, IsCheckpointComplete and CheckpointCompletedTimestamp.
// Instances rows carry Name, Version, ExecutionId, RuntimeStatus,
// CreatedTime, LastUpdatedTime, CompletedTime, Input, Output, CustomStatus
// ("null" when unset), ScheduledStartTime, Generation, TaskHubName and Tags.
//
// Queue messages over 45 KB are gzipped to
// h-largemessages/{escaped id}/message-{ActivityId}-{EventType}.json.gz and
// the queue carries the CompressedBlobName envelope. Table properties over
// 60 KB (UTF-16) are gzipped to {escaped id}/history-{RowKey}-… blobs named
// by a {Prop}BlobName column; Instances Input and Output hold the blob's URL.
// Readers inflate all of these transparently.
//
// # Commit order and recovery
//
// CompleteOrchestrationWorkItem (1) writes the new history rows and the
// sentinel in entity-group transactions of at most 99 rows, (2) sends the
// outbound messages, (3) merges the Instances row, (4) deletes the consumed
// messages (in the background: the commit is durable by then). Step 1 is
// optimistic: the sentinel is Added when no sentinel is known (409: another
// writer) and Merged with If-Match on its ETag otherwise (412); either
// conflict returns backend.ErrWorkItemLost and the messages are retried
// against freshly read history. The table SDK drops the ETags of
// transactions, so the History table has its own client whose pipeline
// reads them from the batch response; the ETag chains from checkpoint to
// checkpoint in the history cache.
//
// The sentinel of step 1 also records the checkpoint's outbound messages
// (PendingOutbound; activity calls as references to their history row),
// the ids of recently consumed queue messages (RecentMessageIds), the
// consumed messages not yet known to be deleted, with their pop receipts
// (UnackedMessages), and the custom status. If the process dies after
// step 1, the consumed messages come back after their visibility timeout
// and are recognised by id and dropped; the history load they cause sees
// that the Instances row is older than the sentinel's checkpoint, resends
// every recorded outbound message whose answer is not in history, and
// rewrites the row from history (so a finished instance is never left
// reported as Running). Stats counts Dropped, Resent and Repaired.
//
// Messages are checked before they reach the runtime: a message already
// applied (by id), a second start of the current execution, and a result
// whose task, timer or sub-orchestration already has one are dropped; a
// result that arrives before its scheduling event is in history is
// deferred (made invisible with back-off) and retried; an event for an
// instance that has a row but has not started is deferred; an event for an
// unknown instance (after 3 deliveries; except an EventRaised for an
// entity, "@name@key", which starts the entity), a finished instance or a past
// execution is moved to the queue h-poison with the reason (Poisoned).
// External events for a running instance are always delivered; the runtime
// buffers them. Carried-over events (backend.OrchestrationCompletion
// Carryover) keep their queue messages unacknowledged and are handed out
// again with the instance's next work item.
//
// Timer and scheduled-start messages are enqueued invisible until they are
// due, at most MaxMessageDelay (6 days) per hop; one delivered early is
// re-enqueued with the remaining delay (Redelayed).
//
// # Dispatch and wake-up
//
// Each owned partition has a poller (batches of up to ControlQueueBatchSize
// messages, paused while ControlQueueBufferThreshold messages wait in
// memory) and the process has one h-workitems poller. Empty polls back off
// by randomized doubling from 50 ms to MaxQueuePollingInterval. A message
// this process sends to a queue it polls, while that queue's local backlog
// is short, is enqueued invisible for the visibility timeout and handed to
// the local dispatcher at once with the receipt the enqueue returned: no
// poll is needed, so a chain of activities runs at the speed of its storage
// writes and an idle host can poll rarely. Should the process die, the
// message becomes visible again and is processed normally; a message
// fetched again while held only refreshes its receipt. Delayed messages
// wake the local poller when due.
//
// An activity result for an instance of a partition this process owns is
// handed over in memory instead of being enqueued: the activity message
// stays invisible (its visibility still renewed) until the checkpoint that
// records the result deletes it, so the result costs no request of its own
// and nothing is acknowledged before its effect is written. Should the
// process die first, the activity message comes back and the call is made
// again (activities run at least once); a redelivered activity message
// whose result is already in history is deleted without a call (and, when
// the Instances row shows that checkpoint interrupted, a copy of the
// recorded answer goes to the control queue so that the owner finishes the
// checkpoint). A held result that leaves memory unacknowledged (a deferral
// or an abandon with delay, Stop) is enqueued then, with the activity
// message deleted after it. Hand-overs count in the partition's backlog;
// past ControlQueueBufferThreshold small results are still handed over, up
// to four times the threshold.
//
// Messages are grouped by instance into sessions; one work item per
// instance is out at a time. Committed histories are cached (up to
// MaxCachedInstances), so a new event does not reload history; an instance
// created by this process with no prior row starts with a known-empty
// history (a wrong guess is caught by the sentinel Add). Activity messages
// have their visibility renewed while the activity runs; abandoning makes a
// message invisible for the given delay, growing with repeated abandons.
// Storage calls are retried with capped, jittered back-off and
// rate-limited logs, so the backend rides out storage outages.
//
// A chain of three activities (HelloSequence) started and run by one
// process costs 17 storage requests plus idle polls: 2 for the start
// (message, Instances row), 4 for each of the first three episodes
// (history transaction, activity message, Instances row, acknowledgement
// of the consumed start or activity message) and 3 for the last one. No
// history is read, no result is enqueued and no queue is polled on the
// way.
//
// Exactly-once processing does not rest on a window of recent ids: a
// consumed message whose delete is lost (the process died, or the message
// was fetched again meanwhile and the delete met another pop receipt) may
// come back after any number of other messages, behind a backlog of any
// size. So a consumed message stays in the instance's UnackedMessages
// until a delete is seen to remove it (deleted, or 404 MessageNotFound; a
// 400 PopReceiptMismatch means that a copy is still queued), however many
// checkpoints that takes, and every copy that comes back meanwhile is
// dropped and deleted. A process that loads the instance's history, after
// finishing an interrupted checkpoint, deletes the listed messages with
// their recorded receipts: those found gone leave the list, the others
// are dropped when they come back. The list holds only messages whose
// deletes are in flight or whose copies are on their way, so it is bounded
// by what is in flight, not by the number of messages processed;
// RecentMessageIds keep the last 100 consumed ids besides.
//
// # Deviations from DurableTask.AzureStorage
//
//   - Commit order: history before outbound messages (DurableTask.AzureStorage
//     sends first), with the sentinel's recovery record covering the gap, so
//     that no answer can arrive before the history that expects it.
//   - Partitions are owned through blob leases on h-leases/default/{queue}
//     (first come, first served, no stealing or balancing; a dead process's
//     partitions are taken over when its leases expire; Stop releases them)
//     rather than the table partition manager; there is no HPartitions table
//     and no app lease. taskhub.json records the partition count, and an
//     existing hub's count wins over the configured one.
//   - Undecodable messages and events for unknown or finished instances go
//     to h-poison with the reason instead of being dropped.
//   - Purging deletes large-message blobs under "{escaped id}/" (with the
//     slash), not every name starting with the id; spilled message blobs
//     are named by the escaped id too.
//   - The sentinel has four extra columns (PendingOutbound,
//     RecentMessageIds, UnackedMessages, CustomStatus); Instances rows are
//     not touched by suspend/resume reasons beyond what the runtime reports.
//   - The query continuation token is this package's own (base64 JSON of
//     the table's next keys).
package azurestorage
