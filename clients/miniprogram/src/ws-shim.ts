// Stands in for the `ws` package (which RxDB's GraphQL replication imports for Node) in the bundle:
// the platform's own WebSocket (browsers, Node 22+), or one given with setWebSocketImpl (a mini-program's
// wx.connectSocket through wxWebSocket). One adjustment on every socket: a server may end a subscription
// with an execution result that has errors and no data (ours does when the token has expired:
// UNAUTHENTICATED); RxDB's stream handler reads `data` unconditionally and would throw, leaving the stream
// dead. Such a `next` is handed on as the protocol's `error` message for that operation, which ends it
// cleanly, so the SDK can start the streams again with a fresh token (replication.ts).

type Handler = ((event: { data: unknown }) => unknown) | null;
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- any WebSocket-shaped class
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => any;

export function rewriteMessage(data: unknown): unknown {
  if (typeof data !== "string" || !data.includes('"next"')) return data;
  try {
    const message = JSON.parse(data) as { type?: string; id?: string; payload?: { data?: unknown; errors?: unknown[] } };
    if (message.type === "next" && message.payload && message.payload.data == null && message.payload.errors?.length) {
      return JSON.stringify({ type: "error", id: message.id, payload: message.payload.errors });
    }
  } catch {
    // not JSON: graphql-ws reports it itself
  }
  return data;
}

let chosen: WebSocketConstructor | undefined;

/** The WebSocket class replication streams use from now on (default: the platform's). */
export function setWebSocketImpl(impl: WebSocketConstructor | undefined): void {
  chosen = impl;
}

function findSetter(object: object, name: string): ((value: unknown) => void) | undefined {
  for (let proto: object | null = object; proto; proto = Object.getPrototypeOf(proto)) {
    const descriptor = Object.getOwnPropertyDescriptor(proto, name);
    if (descriptor) return descriptor.set;
  }
  return undefined;
}

/** Called with `new` by graphql-ws: returns a socket of the chosen class, its onmessage adjusted. */
export function WebSocket(url: string, protocols?: string | string[]): unknown {
  const Impl = chosen ?? (globalThis as unknown as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (!Impl) throw new Error("no WebSocket on this platform: pass webSocketImpl to startReplication");
  const socket = new Impl(url, protocols);
  const setNative = findSetter(socket, "onmessage");
  let handler: Handler = null;
  let plain: Handler = null; // for a class whose onmessage is a plain property
  Object.defineProperty(socket, "onmessage", {
    configurable: true,
    get: () => (setNative ? handler : plain),
    set: (next: Handler) => {
      handler = next;
      const wrapped: Handler = next ? (event) => next.call(socket, { data: rewriteMessage(event.data) }) : null;
      if (setNative) setNative.call(socket, wrapped);
      else plain = wrapped;
    },
  });
  return socket;
}
WebSocket.CONNECTING = 0;
WebSocket.OPEN = 1;
WebSocket.CLOSING = 2;
WebSocket.CLOSED = 3;
export default WebSocket;

/** The part of `wx` that wxWebSocket uses (wx.connectSocket and its SocketTask, as WeChat documents them). */
export interface WxSocketLike {
  connectSocket(options: { url: string; protocols?: string[]; header?: Record<string, string> }): {
    onOpen(cb: () => void): void;
    onMessage(cb: (result: { data: unknown }) => void): void;
    onClose(cb: (result: { code: number; reason: string }) => void): void;
    onError(cb: (error: { errMsg: string }) => void): void;
    send(options: { data: string }): void;
    close(options: { code?: number; reason?: string }): void;
  };
}

/** A WebSocket-shaped class over wx.connectSocket, for graphql-ws in a mini-program. */
export function wxWebSocket(wx: WxSocketLike): WebSocketConstructor {
  return class WxWebSocket {
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSING = 2;
    static CLOSED = 3;
    readyState = 0;
    onopen: (() => void) | null = null;
    onmessage: Handler = null;
    onclose: ((event: { code: number; reason: string }) => void) | null = null;
    onerror: ((error: unknown) => void) | null = null;
    private task: ReturnType<WxSocketLike["connectSocket"]>;
    constructor(url: string, protocols?: string | string[]) {
      this.task = wx.connectSocket({ url, protocols: protocols === undefined ? undefined : ([] as string[]).concat(protocols) });
      this.task.onOpen(() => {
        this.readyState = 1;
        this.onopen?.();
      });
      this.task.onMessage((result) => this.onmessage?.({ data: result.data }));
      this.task.onError((error) => this.onerror?.(error));
      this.task.onClose((result) => {
        this.readyState = 3;
        this.onclose?.({ code: result.code, reason: result.reason });
      });
    }
    send(data: string): void {
      this.task.send({ data });
    }
    close(code?: number, reason?: string): void {
      this.readyState = 2;
      this.task.close({ code, reason });
    }
  };
}
