import assert from "node:assert/strict";
import { test } from "node:test";

import {
  NetworkError,
  ReloginRequired,
  YibaoClient,
  YibaoError,
  createFetchTransport,
  createWxTransport,
  localStorageAdapter,
  memoryStorage,
  wxStorageAdapter,
} from "../dist/yibao-sdk.js";
import { fakeBackend, fakeWx } from "./fake-backend.mjs";

function clientFor(backend, extra = {}) {
  return new YibaoClient({ transport: backend.transport, storage: memoryStorage(), sleep: async () => {}, ...extra });
}

test("login stores the session and calls carry the bearer token", async () => {
  const backend = fakeBackend();
  const client = clientFor(backend);
  assert.equal(await client.isLoggedIn(), false);
  await client.login("resident");
  assert.equal(await client.isLoggedIn(), true);
  const me = await client.me();
  assert.equal(me.name, "张三");
  const call = backend.state.calls.at(-1);
  assert.equal(call.operationName, "Me");
  assert.equal(call.auth, "Bearer access-1");
});

test("a wrong demo login is a YibaoError with the server's code and zh-CN message", async () => {
  const client = clientFor(fakeBackend());
  await assert.rejects(client.login("nobody"), (error) => {
    assert.ok(error instanceof YibaoError);
    assert.equal(error.code, "UNAUTHENTICATED");
    assert.equal(error.reason, "unknown_demo_login");
    assert.equal(error.message, "演示账号不存在");
    return true;
  });
  assert.equal(await client.isLoggedIn(), false);
});

test("concurrent callers with an expiring token share one refresh", async () => {
  const backend = fakeBackend();
  let now = 1_000_000;
  const client = clientFor(backend, { now: () => now });
  await client.login("resident");
  now += 890_000; // within the refresh margin of the 900 s token
  const results = await Promise.all(Array.from({ length: 8 }, () => client.me()));
  assert.equal(results.length, 8);
  assert.equal(backend.state.refreshCalls, 1);
  const meCalls = backend.state.calls.filter((c) => c.operationName === "Me");
  assert.deepEqual(new Set(meCalls.map((c) => c.auth)), new Set(["Bearer access-2"]));
});

test("a session the server expired mid-use is refreshed once, then the call is retried", async () => {
  const backend = fakeBackend();
  const client = clientFor(backend);
  await client.login("resident");
  await client.me();
  backend.expireAll(); // the server's clock says the token is over, the client's does not
  const results = await Promise.all([client.me(), client.me(), client.me()]);
  assert.equal(results.length, 3);
  assert.equal(backend.state.refreshCalls, 1);
  assert.equal((await client.session()).accessToken, "access-2");
});

test("a refused refresh ends the session with a clear re-login error", async () => {
  const backend = fakeBackend();
  const client = clientFor(backend);
  const seen = [];
  client.onSessionChange((session) => seen.push(session && session.accessToken));
  await client.login("resident");
  backend.expireAll();
  backend.state.refuseRefresh = true;
  const failures = await Promise.allSettled([client.me(), client.me()]);
  for (const failure of failures) {
    assert.equal(failure.status, "rejected");
    assert.ok(failure.reason instanceof ReloginRequired);
    assert.equal(failure.reason.code, "UNAUTHENTICATED");
    assert.equal(failure.reason.message, "登录已过期，请重新登录");
  }
  assert.equal(backend.state.refreshCalls, 1);
  assert.equal(await client.isLoggedIn(), false);
  assert.deepEqual(seen, ["access-1", null]);
  await assert.rejects(client.me(), ReloginRequired); // no request goes out without a session
});

test("logout forgets the session and tells the server", async () => {
  const backend = fakeBackend();
  const client = clientFor(backend);
  await client.login("resident");
  await client.logout();
  assert.equal(await client.isLoggedIn(), false);
  assert.equal(backend.state.calls.at(-1).operationName, "Logout");
  assert.deepEqual(backend.state.calls.at(-1).variables, { refreshToken: "refresh-1" });
});

test("the wx.request transport and the fetch transport see the same server the same way", async () => {
  const backend = fakeBackend();
  const base = await backend.listen();
  try {
    const wx = await fakeWx();
    const viaFetch = createFetchTransport(base);
    const viaWx = createWxTransport(base, wx);
    const request = { url: "/graphql", method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ operationName: "Login", variables: { code: "resident" } }) };
    const a = await viaFetch.request(request);
    const b = await viaWx.request(request);
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.equal(a.headers["x-fake"], "yes");
    assert.equal(b.headers["x-fake"], "yes");
    assert.deepEqual(Object.keys(JSON.parse(a.body).data.login).sort(), Object.keys(JSON.parse(b.body).data.login).sort());
    assert.equal(wx.requests[0].dataType, "text"); // wx does not parse the JSON itself
    const notFound = { ...request, url: "/nothing" };
    assert.equal((await viaFetch.request(notFound)).status, 404);
    assert.equal((await viaWx.request(notFound)).status, 404);

    // A whole client over each transport, with wx storage for the wx one.
    for (const [transport, storage] of [
      [viaFetch, memoryStorage()],
      [viaWx, wxStorageAdapter(wx)],
    ]) {
      const client = new YibaoClient({ transport, storage });
      await client.login("resident");
      assert.equal((await client.me()).name, "张三");
    }
    assert.ok(JSON.parse(wx.storage.get("yibao.session")).accessToken.startsWith("access-"));
  } finally {
    await backend.close();
  }
});

test("both transports report a timeout as a NetworkError of kind timeout", async () => {
  const backend = fakeBackend({ delayMs: (op) => (op === "Me" ? 5000 : 0) });
  const base = await backend.listen();
  try {
    const wx = await fakeWx();
    for (const transport of [createFetchTransport(base), createWxTransport(base, wx)]) {
      const login = await transport.request({ url: "/graphql", method: "POST", headers: {}, body: JSON.stringify({ operationName: "Login", variables: { code: "resident" } }) });
      const { accessToken } = JSON.parse(login.body).data.login;
      await assert.rejects(
        transport.request({ url: "/graphql", method: "POST", headers: { authorization: `Bearer ${accessToken}` }, body: JSON.stringify({ operationName: "Me", variables: {} }), timeoutMs: 300 }),
        (error) => error instanceof NetworkError && error.kind === "timeout",
      );
    }
    const refused = createFetchTransport("http://127.0.0.1:9"); // nothing listens on the discard port
    await assert.rejects(refused.request({ url: "/graphql", method: "POST", headers: {}, body: "{}" }), (e) => e instanceof NetworkError && e.kind === "network");
  } finally {
    await backend.close();
  }
});

test("a createFiling that timed out is retried with the same clientId: one filing on the server", async () => {
  // The first attempt reaches the server and is written, but its answer comes too late.
  let slowed = false;
  const backend = fakeBackend({ delayMs: (op) => (op === "CreateFiling" && !slowed ? ((slowed = true), 5000) : 0) });
  const base = await backend.listen();
  try {
    const sleeps = [];
    const client = new YibaoClient({ transport: createFetchTransport(base), storage: memoryStorage(), timeoutMs: 1000, sleep: async (ms) => void sleeps.push(ms) });
    await client.login("resident");
    const filing = await client.createFiling({ kind: "CROSS_REGION", fields: { region: "110101" } });
    const attempts = backend.state.calls.filter((c) => c.operationName === "CreateFiling");
    assert.equal(attempts.length, 2);
    assert.equal(attempts[0].variables.input.clientId, attempts[1].variables.input.clientId);
    assert.match(attempts[0].variables.input.clientId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.equal(backend.state.filings.size, 1);
    assert.equal(filing.clientId, attempts[0].variables.input.clientId);
    assert.deepEqual(sleeps, [500]); // backed off once before the retry
  } finally {
    await backend.close();
  }
});

test("a mutation that is not safe to repeat is not retried after a timeout", async () => {
  const backend = fakeBackend({ delayMs: (op) => (op === "RequestFamilyLink" ? 5000 : 0) });
  const base = await backend.listen();
  try {
    const client = new YibaoClient({ transport: createFetchTransport(base), storage: memoryStorage(), timeoutMs: 1000, sleep: async () => {} });
    await client.login("resident");
    await assert.rejects(
      client.requestFamilyLink({ relationship: "PARENT", name: "李四", idNumber: "110101195001011234" }),
      (error) => error instanceof NetworkError && error.kind === "timeout",
    );
    assert.equal(backend.state.linkRequests, 1);
    assert.equal(backend.state.calls.filter((c) => c.operationName === "RequestFamilyLink").length, 1);
  } finally {
    await backend.close();
  }
});

test("unlinkFamily sends the generated UnlinkFamily operation and is retried after a lost answer", async () => {
  const backend = fakeBackend();
  let dropped = 0;
  // The first UnlinkFamily reaches the server but its answer is lost.
  const transport = {
    async request(request) {
      const response = await backend.transport.request(request);
      if (JSON.parse(request.body).operationName === "UnlinkFamily" && dropped++ === 0) throw new NetworkError("timeout", "lost answer");
      return response;
    },
  };
  const client = clientFor(backend, { transport });
  await client.login("resident");
  const link = await client.unlinkFamily("42");
  assert.deepEqual(link, { id: "42", status: "REMOVED" });
  const calls = backend.state.calls.filter((c) => c.operationName === "UnlinkFamily");
  assert.deepEqual(calls.map((c) => c.variables), [{ linkId: "42" }, { linkId: "42" }]);
  assert.deepEqual([...backend.state.unlinked], ["42"]);
});

test("a query is retried with backoff on a busy server, then gives up with the last failure", async () => {
  let n = 0;
  const transport = {
    async request() {
      n += 1;
      return { status: 503, headers: { "retry-after": "1" }, body: "<html>busy</html>" };
    },
  };
  const sleeps = [];
  const storage = memoryStorage({ "yibao.session": JSON.stringify({ accessToken: "a", refreshToken: "r", expiresAt: Date.now() + 600_000 }) });
  const client = new YibaoClient({ transport, storage, retries: 3, sleep: async (ms) => void sleeps.push(ms) });
  await assert.rejects(client.me(), (error) => error.code === "UPSTREAM_UNAVAILABLE" && error.status === 503);
  assert.equal(n, 4);
  assert.deepEqual(sleeps, [500, 1000, 2000]);
});

test("storage adapters: wx's empty string is no value; localStorage is used as given", () => {
  const map = new Map();
  const wxStore = wxStorageAdapter({
    getStorageSync: (k) => (map.has(k) ? map.get(k) : ""),
    setStorageSync: (k, v) => map.set(k, v),
    removeStorageSync: (k) => map.delete(k),
  });
  assert.equal(wxStore.get("x"), null);
  wxStore.set("x", "1");
  assert.equal(wxStore.get("x"), "1");
  wxStore.remove("x");
  assert.equal(wxStore.get("x"), null);

  const items = new Map();
  const ls = localStorageAdapter({ getItem: (k) => items.get(k) ?? null, setItem: (k, v) => items.set(k, v), removeItem: (k) => items.delete(k) });
  ls.set("y", "2");
  assert.equal(ls.get("y"), "2");
  ls.remove("y");
  assert.equal(ls.get("y"), null);
});

test("two tabs on one storage refresh once under the shared lock (navigator.locks), not twice with one token", async () => {
  // A refresh token works once; the second tab sending it again would end the login everywhere.
  const backend = fakeBackend();
  const held = new Map();
  const locks = {
    request(name, run) {
      const result = (held.get(name) ?? Promise.resolve()).then(run);
      held.set(name, result.catch(() => {}));
      return result;
    },
  };
  const previous = Object.getOwnPropertyDescriptor(globalThis, "navigator");
  Object.defineProperty(globalThis, "navigator", { value: { locks }, configurable: true, writable: true });
  try {
    let now = 1_000_000;
    const storage = memoryStorage();
    const tab = () => new YibaoClient({ transport: backend.transport, storage, sleep: async () => {}, now: () => now });
    const [a, b] = [tab(), tab()];
    await a.login("resident");
    now += 890_000; // within the refresh margin of the 900 s token
    const [meA, meB] = await Promise.all([a.me(), b.me()]);
    assert.equal(meA.name, "张三");
    assert.equal(meB.name, "张三");
    assert.equal(backend.state.refreshCalls, 1);
    assert.equal((await b.session()).accessToken, "access-2");
  } finally {
    if (previous) Object.defineProperty(globalThis, "navigator", previous);
    else delete globalThis.navigator;
  }
});

/** The backend behind a transport that loses the answer to the first `drops` refreshes: the server
 * rotates, the phone hears a timeout. Counts refreshes in flight at once. */
function droppingRefreshAnswers(backend, drops = 1) {
  const seen = { refreshes: [], inFlight: 0, maxInFlight: 0 };
  const transport = {
    async request(request) {
      const { operationName, variables } = JSON.parse(request.body);
      if (operationName !== "RefreshToken") return backend.transport.request(request);
      seen.refreshes.push(variables.refreshToken);
      seen.inFlight += 1;
      seen.maxInFlight = Math.max(seen.maxInFlight, seen.inFlight);
      try {
        const response = await backend.transport.request(request);
        if (seen.refreshes.length <= drops) throw new NetworkError("timeout", "request:fail timeout");
        return response;
      } finally {
        seen.inFlight -= 1;
      }
    },
  };
  return { transport, seen };
}

test("a refresh whose answer was lost is sent again with the same token and the login goes on", async () => {
  const backend = fakeBackend();
  const { transport, seen } = droppingRefreshAnswers(backend);
  let now = 1_000_000;
  const sleeps = [];
  const client = new YibaoClient({ transport, storage: memoryStorage(), now: () => now, sleep: async (ms) => void sleeps.push(ms) });
  const heard = [];
  client.onSessionChange((session) => heard.push(session && session.refreshToken));
  await client.login("resident");
  now += 890_000; // within the refresh margin of the 900 s token
  const results = await Promise.all(Array.from({ length: 5 }, () => client.me()));
  assert.deepEqual(results.map((me) => me.name), Array(5).fill("张三"));
  // One refresh (sent twice: the retry carries the same token), never two at once.
  assert.equal(client.refreshCount, 1);
  assert.deepEqual(seen.refreshes, ["refresh-1", "refresh-1"]);
  assert.equal(seen.maxInFlight, 1);
  assert.deepEqual(sleeps, [500]);
  assert.equal(backend.state.graceRefreshes, 1);
  // The pair of the lost answer (refresh-2) was replaced; the session holds the retry's.
  const session = await client.session();
  assert.equal(session.refreshToken, "refresh-3");
  assert.deepEqual(heard, ["refresh-1", "refresh-3"]);
  const meCalls = backend.state.calls.filter((c) => c.operationName === "Me");
  assert.deepEqual(new Set(meCalls.map((c) => c.auth)), new Set(["Bearer access-3"]));
  // And the next refresh works as usual.
  now += 890_000;
  assert.equal((await client.me()).name, "张三");
  assert.equal((await client.session()).refreshToken, "refresh-4");
});

test("a refresh that never gets an answer gives up with the network error and keeps the session", async () => {
  const backend = fakeBackend();
  const { transport, seen } = droppingRefreshAnswers(backend, Infinity);
  let now = 1_000_000;
  const client = new YibaoClient({ transport, storage: memoryStorage(), retries: 2, now: () => now, sleep: async () => {} });
  await client.login("resident");
  now += 890_000;
  await assert.rejects(client.me(), (error) => error instanceof NetworkError && error.kind === "timeout");
  assert.equal(seen.refreshes.length, 3);
  assert.equal(seen.maxInFlight, 1);
  assert.equal(await client.isLoggedIn(), true); // no answer is no refusal: the signal may come back
});
