// A real RxDB database (memory storage) synced with the running server through the SDK's replication
// wiring (clients/miniprogram/dist): first sync of every collection, an offline draft pushed, a
// server-side change streamed over graphql-ws, a conflict. Prints one JSON report for
// tests/miniprogram/test_rxdb_replication.py. Usage: node [--experimental-websocket] rxdb_replication.mjs BASE_URL
import { randomUUID } from "node:crypto";

const base = process.argv[2];
// `expiry TTL_S`: the access token runs out while the replica is live (see the end of the file).
const mode = process.argv[3] ?? "sync";
const ttlS = Number(process.argv[4] ?? 0);
const report = { steps: [] };
const step = (name, data = {}) => report.steps.push({ name, ...data });

// Every graphql-ws message from the server, to show what came over the stream (not a pull).
const streamed = [];
const NativeWebSocket = globalThis.WebSocket;
globalThis.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    this.addEventListener("message", (event) => {
      try {
        const message = JSON.parse(event.data);
        if (message.type === "next" && message.payload?.errors) {
          streamed.push({ error: message.payload.errors });
        } else if (message.type === "next") {
          const [field, value] = Object.entries(message.payload?.data ?? {})[0] ?? [];
          streamed.push({ field, resync: value?.resync ?? null, ids: (value?.documents ?? []).map((d) => d.id) });
        } else if (message.type === "error") {
          streamed.push({ error: message.payload });
        }
      } catch {}
    });
  }
};

const { NetworkError, YibaoClient, createFetchTransport, createWxTransport, memoryStorage, wxStorageAdapter, uuid4 } = await import("../../clients/miniprogram/dist/yibao-sdk.js");
const { createYibaoDatabase, startReplication, COLLECTIONS, wxWebSocket } = await import("../../clients/miniprogram/dist/yibao-replication.js");

async function waitFor(what, check, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

let replication;
let db;
try {
  // In the expiry run the phone's clock is an hour slow: it believes its token good, the server refuses it.
  const clock = mode === "expiry" ? () => Date.now() - 3600_000 : undefined;
  // In the lossy run the first push reaches the server but its answer is lost (a timeout on a slow network).
  const lost = [];
  const fetchTransport = createFetchTransport(base);
  // In the wx run everything goes through a `wx` object (wx.request, wx.connectSocket, wx storage).
  const { fakeWx } = await import("../../clients/miniprogram/test/fake-backend.mjs");
  const wx = mode === "wx" ? await fakeWx() : null;
  const transport = wx ? createWxTransport(base, wx) : mode !== "lossy" ? fetchTransport : {
    async request(request) {
      const response = await fetchTransport.request(request);
      if (lost.length === 0 && JSON.parse(request.body).operationName === "PushFiling") {
        lost.push(JSON.parse(response.body));
        throw new NetworkError("timeout", "request timed out after 15000 ms");
      }
      return response;
    },
  };
  const client = new YibaoClient({ transport, storage: wx ? wxStorageAdapter(wx) : memoryStorage(), now: clock, sleep: async () => {} });
  // What the client sent for pushes, and the conflicts the server answered with.
  const pushes = [];
  const execute = client.execute.bind(client);
  client.execute = async (body, options) => {
    const answer = await execute(body, options);
    const request = JSON.parse(body);
    if (request.operationName?.startsWith("Push")) pushes.push({ operation: request.operationName, rows: request.variables.rows, answer });
    if (answer.errors) step("graphql error", { operation: request.operationName, errors: answer.errors });
    return answer;
  };
  if (mode === "revoke" || mode === "lossy" || mode === "wx" || mode === "read" || mode === "refused") {
    // A fresh person made by the test: its access token, handed over as a stored session.
    await client.storage.set("yibao.session", JSON.stringify({ accessToken: process.env.YIBAO_TEST_TOKEN, refreshToken: "unused", expiresAt: Date.now() + 600_000 }));
    if (mode === "revoke") await revoke(client, process.argv[4], process.argv[5]);
    else if (mode === "lossy") await lossy(client, process.argv[4], lost, pushes);
    else if (mode === "read") await markRead(client, process.argv[4]);
    else if (mode === "refused") await refused(client, process.argv[4]);
    else await overWx(client, wx, process.argv[4]);
    throw "done";
  }
  await client.login("resident");
  const me = await client.me();
  report.me = me.id;
  if (mode === "expiry") {
    await expiry(client, me);
    throw "done";
  }

  const errors = [];
  const online = () => startReplication(db, client, { baseUrl: base, batchSize: 7, retryTimeMs: 500, onError: (c, e) => errors.push({ collection: c, error: String(e?.message ?? e), code: e?.code ?? null }) });

  // 1. First sync of every collection.
  db = await createYibaoDatabase({ name: `yibao-test-${randomUUID().slice(0, 8)}` });
  replication = online();
  await replication.awaitInitialReplication();
  report.first = {};
  for (const [name, spec] of Object.entries(COLLECTIONS)) {
    const docs = (await db.collections[spec.rxName].find().exec()).map((d) => d.toJSON());
    const byPerson = {};
    for (const doc of docs) byPerson[doc.personId] = (byPerson[doc.personId] ?? 0) + 1;
    report.first[name] = { count: docs.length, byPerson, ids: docs.map((d) => d.id).sort() };
  }
  step("first sync");

  // 2. Offline: a draft made without signal, pushed when back online.
  await replication.cancel();
  const draftId = uuid4();
  const fields = { registrationType: "temporary_trip", destinationRegion: "310104", startOn: new Date().toISOString().slice(0, 10), endOn: new Date(Date.now() + 30 * 86400e3).toISOString().slice(0, 10), reason: "到上海探亲期间就医" };
  const now = new Date().toISOString();
  const draftDoc = (id) => ({ id, personId: me.id, updatedAt: now, serverId: null, kind: "cross_region", kindLabel: null, status: "draft", statusLabel: null, stage: null, fields, amountFen: null, linkId: null, filedByPersonId: null, dueOn: null, decisionReason: null, createdAt: now, submittedAt: null, decidedAt: null, version: null });
  await db.collections.filings.insert(draftDoc(draftId));
  replication = online();
  await replication.awaitInSync();
  const pushedDraft = await waitFor("the draft's server id", async () => {
    const doc = await db.collections.filings.findOne(draftId).exec();
    return doc?.serverId ? doc.toJSON() : null;
  });
  const onServer = (await client.myFilings({ first: 100 })).edges.map((e) => e.node).filter((f) => f.clientId === draftId);
  report.offlineDraft = { id: draftId, local: pushedDraft, onServer };
  step("offline draft pushed");

  // 3. A change made on the server (the draft submitted through the API, not the replica) arrives over the stream.
  const streamedBefore = streamed.length;
  const submitted = await client.submitFiling(pushedDraft.serverId);
  const local = await waitFor("the submission to reach the replica", async () => {
    const doc = (await db.collections.filings.findOne(draftId).exec())?.toJSON();
    return doc?.status === "submitted" ? doc : null;
  });
  report.streamedChange = { submittedStatus: submitted.status, local, messages: streamed.slice(streamedBefore) };
  step("server change streamed");

  // 4. A conflict: a draft edited offline while the server submitted it.
  const secondId = uuid4();
  await db.collections.filings.insert({ ...draftDoc(secondId), fields: { ...fields, reason: "第二份" } });
  const second = await waitFor("the second draft's server id", async () => {
    const doc = await db.collections.filings.findOne(secondId).exec();
    return doc?.serverId && doc.version != null ? doc.toJSON() : null;
  });
  await replication.cancel(); // offline
  const doc = await db.collections.filings.findOne(secondId).exec();
  await doc.incrementalPatch({ fields: { ...fields, reason: "离线时改过" }, updatedAt: new Date().toISOString() });
  const serverSide = await client.submitFiling(second.serverId); // meanwhile, on the server
  const pushesBefore = pushes.length;
  replication = online();
  await replication.awaitInSync();
  const resolved = await waitFor("the conflict to resolve to the server's state", async () => {
    const d = (await db.collections.filings.findOne(secondId).exec())?.toJSON();
    return d?.status === "submitted" ? d : null;
  });
  const serverNow = await client.filing(second.serverId);
  report.conflict = { id: secondId, before: second, serverSide: { status: serverSide.status, fields: serverSide.fields }, resolved, serverNow: { status: serverNow.status, fields: serverNow.fields }, pushes: pushes.slice(pushesBefore) };
  step("conflict");
  report.errors = errors;
  report.pushes = pushes.length;
} catch (error) {
  if (error !== "done") report.error = String(error?.stack ?? error);
} finally {
  try {
    await replication?.cancel();
    await db?.close();
  } catch {}
}
console.log(JSON.stringify(report));
process.exit(0);

// The server's access token expires while the replica streams: the next event ends the subscriptions
// with UNAUTHENTICATED, the SDK starts them again on a new socket with a refreshed token and pulls what
// came meanwhile. HTTP calls with the expired token are refreshed and retried.
async function expiry(client, me) {
  db = await createYibaoDatabase({ name: `yibao-expiry-${randomUUID().slice(0, 8)}` });
  const errors = [];
  replication = startReplication(db, client, { baseUrl: base, retryTimeMs: 300, onError: (c, e) => errors.push({ collection: c, error: String(e?.message ?? JSON.stringify(e)) }) });
  await replication.awaitInitialReplication();
  const tokenBefore = (await client.session()).accessToken;
  // Past the token's lifetime on the server (the client is told to refresh only when refused).
  await new Promise((r) => setTimeout(r, (ttlS + 2) * 1000));
  const refreshesBefore = client.refreshCount;
  const today = new Date().toISOString().slice(0, 10);
  const filing = await client.createFiling({ kind: "CROSS_REGION", fields: { registrationType: "temporary_trip", destinationRegion: "310104", startOn: today, endOn: today, reason: "令牌过期后" } });
  const local = await waitFor("the filing made after expiry to reach the replica", async () => (await db.collections.filings.findOne(filing.clientId).exec())?.toJSON());
  report.expiry = {
    tokenChanged: (await client.session()).accessToken !== tokenBefore,
    refreshes: client.refreshCount - refreshesBefore,
    restarts: replication.restarts,
    local: { id: local.id, serverId: local.serverId, status: local.status },
    filing: { id: filing.id, clientId: filing.clientId },
    streamErrors: streamed.filter((m) => m.error),
    errors,
  };
}

// The holder replicates a relative's records; the link ends (the holder unlinks, through the API): the
// relative's documents leave the holder's replica (the server sends them `_deleted`).
async function revoke(client, linkId, relativeId) {
  db = await createYibaoDatabase({ name: `yibao-revoke-${randomUUID().slice(0, 8)}` });
  replication = startReplication(db, client, { baseUrl: base, retryTimeMs: 300 });
  await replication.awaitInitialReplication();
  const count = async () => {
    const out = {};
    for (const [name, spec] of Object.entries(COLLECTIONS)) {
      const docs = (await db.collections[spec.rxName].find().exec()).map((d) => d.toJSON());
      out[name] = { relative: docs.filter((d) => d.personId === relativeId).length, links: docs.filter((d) => d.id === linkId).length, all: docs.length };
    }
    return out;
  };
  const before = await count();
  const streamedBefore = streamed.length;
  await client.query("mutation Unlink($id: ID!) { unlinkFamily(linkId: $id) { id status } }", { id: linkId });
  await waitFor("the relative's documents to leave the replica", async () => {
    const now = await count();
    return now.Settlement.relative === 0 && now.AccountFlow.relative === 0 && now.Contribution.relative === 0 && now.FamilyLink.links === 0;
  });
  report.revoke = { before, after: await count(), messages: streamed.slice(streamedBefore) };
}

// A draft pushed over a network that loses the first answer: the SDK sends the push again, the server
// (which had written it) answers with its master as a conflict, and there is still one filing.
async function lossy(client, personId, lost, pushes) {
  db = await createYibaoDatabase({ name: `yibao-lossy-${randomUUID().slice(0, 8)}` });
  replication = startReplication(db, client, { baseUrl: base, retryTimeMs: 300 });
  await replication.awaitInitialReplication();
  const id = uuid4();
  const today = new Date().toISOString().slice(0, 10);
  const now = new Date().toISOString();
  await db.collections.filings.insert({ id, personId, updatedAt: now, serverId: null, kind: "cross_region", kindLabel: null, status: "draft", statusLabel: null, stage: null, fields: { registrationType: "temporary_trip", destinationRegion: "310104", startOn: today, endOn: today, reason: "网络很慢" }, amountFen: null, linkId: null, filedByPersonId: null, dueOn: null, decisionReason: null, createdAt: now, submittedAt: null, decidedAt: null, version: null });
  const local = await waitFor("the draft's server id", async () => {
    const doc = (await db.collections.filings.findOne(id).exec())?.toJSON();
    return doc?.serverId ? doc : null;
  });
  await replication.awaitInSync();
  const onServer = (await client.myFilings({ first: 100 })).edges.map((e) => e.node);
  report.lossy = { id, lost, pushes: pushes.map((p) => ({ rows: p.rows.map((r) => r.newDocumentState.id), answer: p.answer })), local: { serverId: local.serverId, status: local.status, version: local.version }, onServer: onServer.map((f) => ({ id: f.id, clientId: f.clientId, status: f.status })) };
}

// A draft the server refuses for good (a typo made offline: a 5-digit region code), saved before a good
// one: the good one still reaches the server, the refused one stays in the replica, unsent, and the
// refusal is reported with the server's message; discarding it then goes through.
async function refused(client, personId) {
  db = await createYibaoDatabase({ name: `yibao-refused-${randomUUID().slice(0, 8)}` });
  const refusals = [];
  replication = startReplication(db, client, { baseUrl: base, retryTimeMs: 300, onPushRefused: (collection, id, error) => refusals.push({ collection, id, ...error }) });
  await replication.awaitInitialReplication();
  const today = new Date().toISOString().slice(0, 10);
  const draft = (id, destinationRegion) => {
    const now = new Date().toISOString();
    return { id, personId, updatedAt: now, serverId: null, kind: "cross_region", kindLabel: null, status: "draft", statusLabel: null, stage: null, fields: { registrationType: "temporary_trip", destinationRegion, startOn: today, endOn: today, reason: "离线填写" }, amountFen: null, linkId: null, filedByPersonId: null, dueOn: null, decisionReason: null, createdAt: now, submittedAt: null, decidedAt: null, version: null };
  };
  const bad = uuid4();
  const good = uuid4();
  await db.collections.filings.bulkInsert([draft(bad, "31011"), draft(good, "310104")]);
  const synced = await waitFor("the good draft's server id", async () => (await db.collections.filings.findOne(good).exec())?.toJSON().serverId ?? null);
  await replication.awaitInSync();
  const kept = (await db.collections.filings.findOne(bad).exec())?.toJSON();
  await (await db.collections.filings.findOne(bad).exec()).remove();
  await replication.awaitInSync();
  const onServer = (await client.myFilings({ first: 100 })).edges.map((e) => e.node.clientId);
  report.refused = { bad, good, synced, refusals, kept: kept && { serverId: kept.serverId, region: kept.fields.destinationRegion }, onServer, sessionLost: replication.sessionLost };
}

// The mini-program's path: HTTP over wx.request, the streams over wx.connectSocket (wxWebSocket), the
// session in wx storage; first sync, then a filing made through the API arrives over the stream.
async function overWx(client, wx, personId) {
  db = await createYibaoDatabase({ name: `yibao-wx-${randomUUID().slice(0, 8)}` });
  replication = startReplication(db, client, { baseUrl: base, retryTimeMs: 300, webSocketImpl: wxWebSocket(wx) });
  await replication.awaitInitialReplication();
  const settlements = (await db.collections.settlements.find().exec()).length;
  const today = new Date().toISOString().slice(0, 10);
  const filing = await client.createFiling({ kind: "CROSS_REGION", fields: { registrationType: "temporary_trip", destinationRegion: "310104", startOn: today, endOn: today, reason: "小程序" } });
  const local = await waitFor("the filing over wx.connectSocket", async () => (await db.collections.filings.findOne(filing.clientId).exec())?.toJSON());
  report.wx = {
    settlements,
    local: { id: local.id, serverId: local.serverId, personId: local.personId },
    filing: { id: filing.id, clientId: filing.clientId },
    wxRequests: wx.requests.length,
    pulls: wx.requests.filter((r) => JSON.parse(r.data).operationName?.startsWith("Pull")).length,
    sockets: wx.sockets,
  };
}

// A notification read on the phone without signal: the read mark is pushed when back online.
async function markRead(client, notificationId) {
  db = await createYibaoDatabase({ name: `yibao-read-${randomUUID().slice(0, 8)}` });
  replication = startReplication(db, client, { baseUrl: base, retryTimeMs: 300 });
  await replication.awaitInitialReplication();
  const before = (await db.collections.notifications.findOne(notificationId).exec())?.toJSON();
  await replication.cancel(); // offline
  const doc = await db.collections.notifications.findOne(notificationId).exec();
  const readAt = new Date().toISOString();
  await doc.incrementalPatch({ readAt });
  replication = startReplication(db, client, { baseUrl: base, retryTimeMs: 300 });
  await replication.awaitInSync();
  const server = await waitFor("the read mark on the server", async () => {
    const answer = await client.notifications({ first: 10 });
    return answer.unreadNotificationCount === 0 ? answer : null;
  });
  report.read = { before: before && { id: before.id, readAt: before.readAt }, readAt, server: server.notifications.edges.map((e) => ({ id: e.node.id, readAt: e.node.readAt })), unread: server.unreadNotificationCount };
}
