import assert from "node:assert/strict";
import { test } from "node:test";

import { WebSocket as NodeWebSocket, WebSocketServer } from "ws";

import { YibaoClient, memoryStorage } from "../dist/yibao-sdk.js";
import {
  COLLECTIONS,
  COLLECTION_NAMES,
  createYibaoDatabase,
  pullQuery,
  pushQuery,
  rewriteMessage,
  rxSchema,
  startReplication,
  streamQuery,
  toPushInput,
  wxWebSocket,
} from "../dist/yibao-replication.js";
import { fakeWx } from "./fake-backend.mjs";

test("six collections; only Filing and Notification are pushed", () => {
  assert.deepEqual(COLLECTION_NAMES, ["Settlement", "Contribution", "AccountFlow", "Filing", "FamilyLink", "Notification"]);
  assert.deepEqual(COLLECTION_NAMES.filter((n) => COLLECTIONS[n].writable), ["Filing", "Notification"]);
  assert.match(pullQuery("Filing"), /pullFiling\(checkpoint: \$checkpoint, limit: \$limit\) \{ documents \{ id .* _deleted \} checkpoint \{ token \} \}/);
  assert.match(streamQuery("Settlement"), /^subscription StreamSettlement \{ streamSettlement \{ documents \{ .* \} checkpoint \{ token \} resync \} \}$/);
  assert.match(pushQuery("Notification"), /^mutation PushNotification\(\$rows: \[NotificationPushRow!\]!\) \{ pushNotification\(rows: \$rows\)/);
});

test("RxDB schemas: keyed by id, nullable fields allow null, _deleted left to RxDB", () => {
  const schema = rxSchema("Filing");
  assert.equal(schema.primaryKey, "id");
  assert.deepEqual(schema.properties.serverId.type, ["string", "null"]);
  assert.equal(schema.properties.fields.type, "object");
  assert.ok(!("_deleted" in schema.properties));
  assert.ok(schema.required.includes("personId") && !schema.required.includes("serverId"));
  assert.equal(rxSchema("FamilyLink").properties.permissions.items.type, "string");
});

test("a push row carries only the input's fields, never RxDB's own", () => {
  const doc = { id: "u1", personId: "7", status: "draft", kind: "cross_region", fields: {}, serverId: null, version: 1, _deleted: false, _rev: "1-x", _meta: { lwt: 1 }, _attachments: {}, statusLabel: "草稿" };
  const input = toPushInput("Filing", doc);
  assert.deepEqual(Object.keys(input).sort(), ["_deleted", "fields", "id", "kind", "personId", "serverId", "status", "statusLabel", "version"]);
  assert.equal(toPushInput("Filing", undefined), null);
  assert.equal(toPushInput("Notification", { id: "3", personId: "7", readAt: "2026-12-01T00:00:00Z", title: "t", _deleted: true })._deleted, true);
});

test("an errors-only stream result becomes the protocol's error message; anything else is passed on", () => {
  const ended = JSON.stringify({ type: "next", id: "1", payload: { data: null, errors: [{ message: "登录已过期", extensions: { code: "UNAUTHENTICATED" } }] } });
  assert.deepEqual(JSON.parse(rewriteMessage(ended)), { type: "error", id: "1", payload: [{ message: "登录已过期", extensions: { code: "UNAUTHENTICATED" } }] });
  const normal = JSON.stringify({ type: "next", id: "1", payload: { data: { streamFiling: { documents: [], checkpoint: null, resync: true } } } });
  assert.equal(rewriteMessage(normal), normal);
  assert.equal(rewriteMessage('{"type":"pong"}'), '{"type":"pong"}');
  assert.equal(rewriteMessage("not json, next"), "not json, next");
});

test("wxWebSocket speaks to a WebSocket server through wx.connectSocket", async () => {
  const server = new WebSocketServer({ port: 0, host: "127.0.0.1", handleProtocols: (protocols) => [...protocols][0] });
  await new Promise((resolve) => server.once("listening", resolve));
  server.on("connection", (socket, request) => {
    socket.send(`protocol:${socket.protocol}`);
    socket.on("message", (data) => socket.send(`echo:${data}`));
  });
  try {
    const wx = await fakeWx();
    const Socket = wxWebSocket(wx);
    assert.equal(Socket.OPEN, 1);
    const socket = new Socket(`ws://127.0.0.1:${server.address().port}/graphql`, "graphql-transport-ws");
    const messages = [];
    await new Promise((resolve) => {
      socket.onopen = () => socket.send("hello");
      socket.onmessage = ({ data }) => {
        messages.push(data);
        if (messages.length === 2) resolve();
      };
    });
    assert.equal(socket.readyState, 1);
    assert.deepEqual(messages, ["protocol:graphql-transport-ws", "echo:hello"]);
    const closed = new Promise((resolve) => (socket.onclose = resolve));
    socket.close(4400, "bye");
    assert.deepEqual(await closed, { code: 4400, reason: "bye" });
    assert.equal(socket.readyState, 3);
  } finally {
    server.close();
  }
});

let databases = 0;
const newDatabase = () => createYibaoDatabase({ name: `test${++databases}` });

test("cancel() is safe on a state that has not started (RxDB's GraphQL cancel threw: missing value from map)", async () => {
  const db = await newDatabase();
  const client = new YibaoClient({ transport: { request: async () => assert.fail("nothing is sent") }, storage: memoryStorage() });
  // RxDB starts a state in a later microtask (after leadership, in a multi-tab page): cancelled before.
  const replication = startReplication(db, client, { baseUrl: "http://127.0.0.1:9", collections: ["Settlement", "Filing"] });
  const states = [...replication.states.values()];
  await replication.cancel();
  assert.ok(states.every((state) => state.isStopped() && !state.wasStarted));
  await new Promise((resolve) => setImmediate(resolve));
  assert.ok(states.every((state) => !state.wasStarted), "a cancelled state started after all");
  await states[0].cancel(); // twice is fine too
  await db.close(); // closing the collections cancels their states again
});

test("a login that ended while the stream's socket waited for a token: onSessionLost once, replication stopped, no unhandled rejection", async () => {
  const unhandled = [];
  const onUnhandled = (reason) => unhandled.push(reason);
  process.on("unhandledRejection", onUnhandled);
  const server = new WebSocketServer({ port: 0, host: "127.0.0.1", handleProtocols: (protocols) => [...protocols][0] });
  await new Promise((resolve) => server.once("listening", resolve));
  const socketOpened = new Promise((resolve) => server.once("connection", resolve));
  const sent = [];
  // The access token has run out; the refresh is refused, but only once the stream's socket is open and
  // its connectionParams waits for the same refresh (a tab handed the lead as the login ended elsewhere).
  const transport = {
    async request({ body }) {
      const { operationName } = JSON.parse(body);
      sent.push(operationName);
      if (operationName === "RefreshToken") await socketOpened;
      return { status: 200, headers: {}, body: JSON.stringify({ data: null, errors: [{ message: "登录已失效", extensions: { code: "UNAUTHENTICATED" } }] }) };
    },
  };
  const storage = memoryStorage({ "yibao.session": JSON.stringify({ accessToken: "old", refreshToken: "r1", expiresAt: 0 }) });
  const client = new YibaoClient({ transport, storage, retries: 0 });
  const db = await newDatabase();
  try {
    const lost = [];
    let reportLost;
    const reported = new Promise((resolve) => (reportLost = resolve));
    const replication = startReplication(db, client, {
      baseUrl: `http://127.0.0.1:${server.address().port}`,
      collections: ["Settlement", "Filing"],
      retryTimeMs: 50,
      webSocketImpl: NodeWebSocket,
      wsOptions: { retryAttempts: Infinity, retryWait: () => new Promise((resolve) => setTimeout(resolve, 20)) },
      onSessionLost: (error) => {
        lost.push(error);
        reportLost();
      },
    });
    await reported;
    assert.equal(lost[0].name, "ReloginRequired");
    assert.equal(replication.sessionLost, true);
    await replication.cancel();
    assert.ok([...replication.states.values()].every((state) => state.isStopped()));
    // Long enough for graphql-ws's retries and dispose to settle (they would fail here, not later).
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(lost.length, 1);
    assert.deepEqual(sent, ["RefreshToken"]);
    assert.deepEqual(unhandled, []);
    assert.equal(replication.restarts, 0);
  } finally {
    process.off("unhandledRejection", onUnhandled);
    await db.close();
    server.close();
  }
});
