// Stands in for the `ws` package (which RxDB's GraphQL replication imports for Node) in the bundle:
// the platform's own WebSocket, as browsers (and Node 22+) have it.
export const WebSocket = (globalThis as unknown as { WebSocket: unknown }).WebSocket;
export default WebSocket;
