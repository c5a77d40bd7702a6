// Stands in for the `ws` package (which RxDB's GraphQL replication imports for Node) in the bundle:
// the platform's own WebSocket (browsers, Node 22+), with one adjustment. A server may end a
// subscription with an execution result that has errors and no data (ours does when the token has
// expired: UNAUTHENTICATED); RxDB's stream handler reads `data` unconditionally and would throw, leaving
// the stream dead. Such a `next` is handed on as the protocol's `error` message for that operation,
// which ends it cleanly, so the SDK can start the streams again with a fresh token (replication.ts).

type Handler = ((this: unknown, event: { data: unknown }) => unknown) | null;

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

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the platform's class, whatever its typing
const Native = (globalThis as unknown as { WebSocket?: new (...args: any[]) => any }).WebSocket;

export const WebSocket = Native
  ? class extends Native {
      private wrapped: Handler = null;
      get onmessage(): Handler {
        return this.wrapped;
      }
      set onmessage(handler: Handler) {
        this.wrapped = handler;
        super.onmessage = handler
          ? function (this: unknown, event: { data: unknown }) {
              return handler.call(this, { data: rewriteMessage(event.data) });
            }
          : null;
      }
    }
  : undefined;
export default WebSocket;
