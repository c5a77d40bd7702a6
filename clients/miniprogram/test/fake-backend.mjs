// A stand-in for the backend's GraphQL endpoint in unit tests: login, refresh (a refresh token works
// once; as on the server, the token just rotated is taken once more while the pair it got is unused,
// the grace for a lost answer), tokens that expire or get revoked, createFiling idempotent on clientId, a requestFamilyLink that
// is not. Served in-process (as a Transport) or over real HTTP (node:http) for the transports' tests.
// The real server is exercised by tests/miniprogram/test_rxdb_replication.py.
import { createServer } from "node:http";

import { WebSocket as NodeWebSocket } from "ws";

export function fakeBackend({ delayMs = () => 0 } = {}) {
  const timers = new Set(); // held answers, dropped on close so that the test process can end
  const state = {
    seq: 0,
    tokens: new Map(), // access token -> { valid }
    refreshTokens: new Map(), // refresh token -> used?
    replacedBy: new Map(), // refresh token presented -> the refresh token its (latest) answer carried
    graceRefreshes: 0,
    filings: new Map(), // clientId -> filing
    linkRequests: 0,
    unlinked: new Set(), // link ids
    calls: [],
    refreshCalls: 0,
    refuseRefresh: false,
  };
  const issue = () => {
    state.seq += 1;
    const accessToken = `access-${state.seq}`;
    const refreshToken = `refresh-${state.seq}`;
    state.tokens.set(accessToken, { valid: true });
    state.refreshTokens.set(refreshToken, false);
    return { accessToken, refreshToken, expiresIn: 900 };
  };
  const unauthenticated = (message = "登录已过期，请重新登录", reason = "token_expired") => ({
    data: null,
    errors: [{ message, extensions: { code: "UNAUTHENTICATED", reason } }],
  });

  async function handle(headers, body) {
    const { operationName, variables } = JSON.parse(body);
    const auth = headers.authorization ?? headers.Authorization;
    state.calls.push({ operationName, variables, auth });
    const wait = delayMs(operationName, state.calls.length);
    switch (operationName) {
      case "Login":
        if (variables.code !== "resident") return unauthenticated("演示账号不存在", "unknown_demo_login");
        return { data: { login: issue() } };
      case "RefreshToken": {
        state.refreshCalls += 1;
        await new Promise((r) => setTimeout(r, 20)); // long enough for concurrent callers to pile up
        const presented = variables.refreshToken;
        const used = state.refreshTokens.get(presented);
        const successor = state.replacedBy.get(presented);
        const grace = used && successor !== undefined && state.refreshTokens.get(successor) === false;
        if (state.refuseRefresh || used === undefined || (used && !grace)) return unauthenticated("登录已失效", "refresh_token_reused");
        if (grace) {
          state.graceRefreshes += 1;
          state.refreshTokens.set(successor, true); // replaced, never presented: presenting it is reuse
        }
        state.refreshTokens.set(presented, true);
        const pair = issue();
        state.replacedBy.set(presented, pair.refreshToken);
        return { data: { refreshToken: pair } };
      }
      case "Logout":
        return { data: { logout: true } };
    }
    const token = auth?.startsWith("Bearer ") ? auth.slice(7) : null;
    if (!token || !state.tokens.get(token)?.valid) return unauthenticated();
    let result;
    switch (operationName) {
      case "Me":
        result = { data: { me: { id: "1", name: "张三", idNumberMasked: "3301**********1234" } } };
        break;
      case "CreateFiling": {
        const input = variables.input;
        if (!state.filings.has(input.clientId)) state.filings.set(input.clientId, { id: String(state.filings.size + 1), clientId: input.clientId, status: "DRAFT" });
        result = { data: { createFiling: state.filings.get(input.clientId) } };
        break;
      }
      case "RequestFamilyLink":
        state.linkRequests += 1;
        result = { data: { requestFamilyLink: { id: String(state.linkRequests), status: "PENDING" } } };
        break;
      case "UnlinkFamily":
        // As on the server: unlinking a closed link returns it as it is.
        state.unlinked.add(variables.linkId);
        result = { data: { unlinkFamily: { id: variables.linkId, status: "REMOVED" } } };
        break;
      default:
        result = { data: null, errors: [{ message: `unknown operation ${operationName}`, extensions: { code: "BAD_REQUEST" } }] };
    }
    if (wait) await new Promise((r) => timers.add(setTimeout(r, wait)));
    return result;
  }

  return {
    state,
    expireAll() {
      for (const entry of state.tokens.values()) entry.valid = false;
    },
    /** An in-process Transport. */
    transport: {
      async request({ headers, body }) {
        const answer = await handle(headers, body);
        return { status: 200, headers: { "content-type": "application/json" }, body: JSON.stringify(answer) };
      },
    },
    /** The same over real HTTP on 127.0.0.1; resolves to its base URL. */
    async listen() {
      const server = createServer((req, res) => {
        let body = "";
        req.on("data", (chunk) => (body += chunk));
        req.on("end", async () => {
          if (req.url !== "/graphql" || req.method !== "POST") {
            res.writeHead(404, { "content-type": "text/plain" }).end("not found");
            return;
          }
          const answer = await handle(req.headers, body);
          if (!res.destroyed) res.writeHead(200, { "content-type": "application/json", "x-fake": "yes" }).end(JSON.stringify(answer));
        });
      });
      await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
      this.server = server;
      return `http://127.0.0.1:${server.address().port}`;
    },
    close() {
      for (const timer of timers) clearTimeout(timer);
      this.server?.closeAllConnections();
      return new Promise((resolve) => (this.server ? this.server.close(resolve) : resolve()));
    },
  };
}

/** A `wx` object shaped like the mini-program's (wx.request, wx.*StorageSync), backed by node:http and a
 * Map: the wx transport's and storage adapter's code runs unchanged against it. */
export async function fakeWx() {
  const { request } = await import("node:http");
  const storage = new Map();
  return {
    storage,
    requests: [],
    request(options) {
      this.requests.push(options);
      const url = new URL(options.url);
      const req = request(
        { hostname: url.hostname, port: url.port, path: url.pathname + url.search, method: options.method, headers: options.header, timeout: options.timeout },
        (res) => {
          let data = "";
          res.setEncoding("utf8");
          res.on("data", (chunk) => (data += chunk));
          res.on("end", () => options.success({ statusCode: res.statusCode, header: res.headers, data }));
        },
      );
      let failed = false;
      req.on("timeout", () => {
        failed = true;
        req.destroy();
        options.fail({ errMsg: "request:fail timeout" });
      });
      req.on("error", (error) => {
        if (!failed) options.fail({ errMsg: `request:fail ${error.message}` });
        failed = true;
      });
      if (options.data !== undefined) req.write(options.data);
      req.end();
    },
    sockets: [],
    /** wx.connectSocket over the `ws` package: a SocketTask as WeChat documents it. */
    connectSocket({ url, protocols }) {
      const socket = new NodeWebSocket(url, protocols);
      this.sockets.push({ url, protocols });
      const on = (event, cb) => socket.on(event, cb);
      return {
        onOpen: (cb) => on("open", () => cb({})),
        onMessage: (cb) => on("message", (data) => cb({ data: data.toString() })),
        onClose: (cb) => on("close", (code, reason) => cb({ code, reason: reason.toString() })),
        onError: (cb) => on("error", (error) => cb({ errMsg: String(error?.message ?? error) })),
        send: ({ data }) => socket.send(data),
        close: ({ code, reason }) => socket.close(code, reason),
      };
    },
    getStorageSync: (key) => (storage.has(key) ? storage.get(key) : ""),
    setStorageSync: (key, value) => void storage.set(key, value),
    removeStorageSync: (key) => void storage.delete(key),
    getStorageInfoSync: () => ({ keys: [...storage.keys()], currentSize: storage.size, limitSize: 10240 }),
  };
}
