import assert from "node:assert/strict";
import { test } from "node:test";

import { WebSocketServer } from "ws";

import { COLLECTIONS, COLLECTION_NAMES, pullQuery, pushQuery, rewriteMessage, rxSchema, streamQuery, toPushInput, wxWebSocket } from "../dist/yibao-replication.js";
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
