// Package billing owns the daily billing run: the subscription domain and
// its tables, the payment service client, the local payment service
// simulator, email (SMTP or an outbox of .eml blobs), the invoice report and
// the demo data.
//
// # Functions
//
//   - BillingTimer: timer, [DefaultSchedule] "0 0 1 * * *" (the environment
//     variable BillingSchedule replaces it). Starts [ProcessBilling] for the
//     occurrence's day as instance billing-YYYY-MM-DD ([StartRun]); a second
//     firing on one day finds that instance pending, running or completed,
//     logs it and starts nothing (a failed or terminated run is started
//     again). Run it by hand with POST /admin/functions/BillingTimer.
//   - O_ProcessBillingSubscription: input "YYYY-MM-DD" or [RunInput]. Lists
//     the subscriptions due, then one ctx.Go branch per subscription charges
//     it (retry: BillingRetryFirstIntervalSeconds, coefficient 2, 10
//     attempts) and sends its notice; custom status [Progress] counts
//     charged, failed and pending; then the report is written and mailed.
//     Output: [Summary].
//   - A_GetSubscriptionListToBill, A_ChargeUserSubscription, A_SendEmail,
//     A_GenerateInvoice: its activities ([Service.Activities]).
//   - PaymentSimulator, PaymentSimulatorConfig: the simulator's routes.
//
// A charge whose retries are all used up is reported Failed. If one of its
// lost answers had in fact charged (the simulator's failures after
// charging), the next run that bills the same period replays the key, gets
// the original receipt and records the charge: money is never taken twice,
// but until then the report shows it as not collected.
//
// # Storage
//
// Everything lives in the AzureWebJobsStorage account; every name below is
// prefixed with BillingStoragePrefix when that setting is set.
//
//   - table Subscriptions: one row per subscription ([Subscription]),
//     PartitionKey "subscription", RowKey the subscription id;
//   - table BillingResults: one row per subscription and period ([Result]),
//     PartitionKey the subscription id, RowKey the period (the billing date
//     charged, YYYY-MM-DD);
//   - table SimPayments: the simulator's ledger (PartitionKey "charge") and
//     its run-time configuration (PartitionKey "config");
//   - table SentEmails: keys sent over SMTP (only when SmtpHost is set);
//   - container invoices: billing-YYYY-MM-DD.csv and billing-YYYY-MM-DD.html;
//   - container outbox: one <key>.eml per message when SmtpHost is not set.
//
// # Never twice
//
// A charge is for a period, named by the subscription's NextBillingDate
// when it was listed, and is sent with the idempotency key
// "<subscription id>:<period>" ([ChargeKey]); the payment service answers a
// repeated key with the original receipt. A charged result is recorded and
// the billing date advanced with conditional writes ([Store.Record]): the
// date moves only while it still equals the period, so repeats never move it
// twice. A run on a later day does not select the subscription again until
// its new date is due.
//
// Notices have the key notice-<billing day>-<subscription id> and the report
// report-<billing day>. In the outbox, a message is the blob named after its
// key, so sending it again overwrites it: each key appears once. Over SMTP,
// each key is claimed in SentEmails before it is sent ([SMTPMailer]): a key
// is sent at most once; a process killed between the claim and the server's
// answer loses that one notice rather than sending it twice.
//
// # App settings
//
//	PaymentServiceUrl                charges endpoint (default http://127.0.0.1:7071/api/sim/payments)
//	PaymentServiceApiKey             bearer token sent to it; the simulator then requires it
//	PaymentSimFailureRate            0..1, share of simulator calls answered 503 (half after charging)
//	PaymentSimLatencyMs              delay of every simulator answer
//	PaymentSimOutage                 start/end (RFC 3339), start/duration, or a duration from host start ("45s")
//	SmtpHost, SmtpPort (587), SmtpUser, SmtpPassword, SmtpFrom
//	                                 SMTP; without SmtpHost mail goes to the outbox container
//	BillingOwnerEmail                receives the report (default billing-owner@example.com)
//	BillingSeedDemoData              "true": seed an empty Subscriptions table with [DemoSubscriptions]
//	BillingRetryFirstIntervalSeconds first retry interval of a charge (default 10)
//	BillingStoragePrefix             prefix of every table and container above (lowercase letters, digits)
//	BillingSchedule                  environment variable only: BillingTimer's schedule
//
// # Simulator endpoints
//
// The host serves [Simulator] anonymously under /api/sim/payments: POST to
// charge, GET to list the ledger, and /api/sim/payments/config to read
// (GET), change (POST {"failureRate", "latencyMs", "outageSeconds",
// "outageStart", "outageEnd", "clearOutage"}) or reset (DELETE) its
// behaviour at run time. Turn it off in production with the app setting
// AzureWebJobs.PaymentSimulator.Disabled=true (and the same for
// PaymentSimulatorConfig).
package billing
