// Drives the official Durable Functions JavaScript client (durable-functions
// v3) against a running Stratus host. The client is built exactly as in a
// Node.js function with a durableClient input: df.getClient(context) over the
// binding data the host hands to durableClient bindings. Nothing in the
// client is patched or configured beyond that.
//
// Usage: node scenario.js BINDING_DATA.json [--entity NAME KEY OP INPUT EXPECTED]
//
// It prints one JSON object with what it observed on its last line of
// standard output, and exits 1 with the error on standard error when a step
// fails. WEBSITE_HOSTNAME must name the host (as it does in Azure); without
// it the client rewrites every URL to http://localhost:7071.
"use strict";

const fs = require("fs");
const df = require("durable-functions");
const { InvocationContext, HttpRequest } = require("@azure/functions");

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const S = df.OrchestrationRuntimeStatus;

function parseArgs(argv) {
  if (argv.length < 1) {
    throw new Error("usage: node scenario.js BINDING_DATA.json [--entity NAME KEY OP INPUT EXPECTED]");
  }
  const args = { bindingData: argv[0], entity: null };
  const i = argv.indexOf("--entity");
  if (i >= 0) {
    const [name, key, op, input, expected] = argv.slice(i + 1, i + 6);
    args.entity = { name, key, op, input: JSON.parse(input), expected: JSON.parse(expected) };
  }
  return args;
}

function clientFrom(bindingData) {
  const clientInput = df.input.durableClient();
  const context = new InvocationContext({
    invocationId: "scenario",
    functionName: "DurableClientScenario",
    options: { extraInputs: [clientInput] },
  });
  context.extraInputs.set(clientInput, bindingData);
  return df.getClient(context);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const bindingData = JSON.parse(fs.readFileSync(args.bindingData, "utf8"));
  const client = clientFrom(bindingData);
  const origin = new URL(bindingData.baseUrl).origin;
  const out = {};

  async function waitStatus(id, want, timeoutMs = 60000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const st = await client.getStatus(id);
      if (want.includes(st.runtimeStatus)) {
        return st;
      }
      if (Date.now() > deadline) {
        throw new Error(`instance ${id} is ${st.runtimeStatus}, want one of ${want}`);
      }
      await sleep(100);
    }
  }

  const createdFrom = new Date(Date.now() - 5000);

  // Start HelloSequence and wait for its completion.
  const helloId = await client.startNew("HelloSequence");
  const request = new HttpRequest({ method: "POST", url: `${origin}/api/scenario` });
  const waited = await client.waitForCompletionOrCreateCheckStatusResponse(request, helloId, {
    timeoutInMilliseconds: 60000,
    retryIntervalInMilliseconds: 200,
  });
  const hello = await client.getStatus(helloId);
  out.hello = {
    id: helloId,
    waitStatus: waited.status,
    waitBody: await waited.json(),
    runtimeStatus: hello.runtimeStatus,
    output: hello.output,
  };
  out.payload = client.createHttpManagementPayload(helloId);
  const checkStatus = client.createCheckStatusResponse(request, helloId);
  out.checkStatus = { status: checkStatus.status, location: checkStatus.headers.get("Location") };

  // Start ApprovalWorkflow and raise Approval.
  const approvalId = `approval-${Date.now()}`;
  await client.startNew("ApprovalWorkflow", { instanceId: approvalId, input: { timeoutSeconds: 600 } });
  await waitStatus(approvalId, [S.Running]);
  await client.raiseEvent(approvalId, "Approval", { by: "df-client" });
  const approval = await waitStatus(approvalId, [S.Completed, S.Failed]);
  out.approval = { id: approvalId, runtimeStatus: approval.runtimeStatus, output: approval.output };

  // Suspend, resume, terminate.
  const controlId = await client.startNew("ApprovalWorkflow", { input: { timeoutSeconds: 600 } });
  await waitStatus(controlId, [S.Running]);
  await client.suspend(controlId, "hold");
  const suspended = await waitStatus(controlId, [S.Suspended]);
  await client.resume(controlId, "go");
  const resumed = await waitStatus(controlId, [S.Running]);
  await client.terminate(controlId, "done");
  const terminated = await waitStatus(controlId, [S.Terminated]);
  out.control = {
    suspended: suspended.runtimeStatus,
    resumed: resumed.runtimeStatus,
    terminated: terminated.runtimeStatus,
    output: terminated.output,
  };

  // Rewind a failed instance whose activity then succeeds.
  const rewindId = await client.startNew("RetryDemo", { input: { failures: 1, maxAttempts: 1 } });
  const failed = await waitStatus(rewindId, [S.Failed, S.Completed]);
  await client.rewind(rewindId, "again");
  const rewound = await waitStatus(rewindId, [S.Completed, S.Failed]);
  out.rewind = { before: failed.runtimeStatus, after: rewound.runtimeStatus, output: rewound.output };

  // More instances than one page holds (the API answers at most 100 per
  // page by default); the client follows x-ms-continuation-token.
  const pageCount = 105;
  for (let i = 0; i < pageCount; i += 15) {
    const batch = [];
    for (let j = i; j < Math.min(i + 15, pageCount); j++) {
      batch.push(client.startNew("Chain", { instanceId: `page-${j}`, input: { steps: 0 } }));
    }
    await Promise.all(batch);
  }
  const isPage = (s) => s.instanceId.startsWith("page-");
  let completed = [];
  for (const deadline = Date.now() + 120000; ; ) {
    completed = await client.getStatusBy({ createdTimeFrom: createdFrom, runtimeStatus: [S.Completed] });
    if (completed.filter(isPage).length >= pageCount || Date.now() > deadline) {
      break;
    }
    await sleep(250);
  }
  const completedIds = completed.map((s) => s.instanceId);
  const all = await client.getStatusAll();
  out.list = {
    completed: completed.length,
    completedPages: completed.filter(isPage).length,
    distinct: new Set(completedIds).size,
    allStatuses: [...new Set(all.map((s) => s.runtimeStatus))].sort(),
    all: all.length,
    terminatedOrSuspended: (await client.getStatusBy({ runtimeStatus: [S.Terminated, S.Suspended] })).map((s) => s.instanceId),
    failed: (await client.getStatusBy({ createdTimeFrom: createdFrom, runtimeStatus: [S.Failed] })).length,
    createdBefore: (await client.getStatusBy({ createdTimeFrom: new Date("2020-01-01T00:00:00Z"), createdTimeTo: new Date(createdFrom.getTime() - 60000) })).length,
  };
  out.controlId = controlId;

  // Purge one instance, then the completed ones by filter.
  const purgedOne = await client.purgeInstanceHistory(helloId);
  let helloGone = false;
  try {
    await client.getStatus(helloId);
  } catch (e) {
    helloGone = /404/.test(e.message);
  }
  const purgedAgain = await client.purgeInstanceHistory(helloId);
  const purgedBy = await client.purgeInstanceHistoryBy({ createdTimeFrom: createdFrom, runtimeStatus: [S.Completed] });
  const left = await client.getStatusAll();
  out.purge = {
    one: purgedOne.instancesDeleted,
    helloGone,
    again: purgedAgain.instancesDeleted,
    byFilter: purgedBy.instancesDeleted,
    left: left.map((s) => s.instanceId).sort(),
  };

  // Signal an entity and read its state.
  if (args.entity) {
    const e = args.entity;
    const id = new df.EntityId(e.name, e.key);
    await client.signalEntity(id, e.op, e.input);
    let state;
    for (const deadline = Date.now() + 60000; ; ) {
      state = await client.readEntityState(id);
      if ((state.entityExists && JSON.stringify(state.entityState) === JSON.stringify(e.expected)) || Date.now() > deadline) {
        break;
      }
      await sleep(100);
    }
    out.entity = { exists: state.entityExists, state: state.entityState };
  }

  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(1);
});
