// The phone's replica: an RxDB database with the six collections the server replicates
// (api/replication/mobile, docs/replication-mobile.md), kept in sync with RxDB's own GraphQL replication
// plugin (`replicateGraphQL`): pull `pullX(checkpoint, limit)`, push `pushX(rows)` for Filing and
// Notification, and the live stream `streamX` over graphql-ws (graphql-transport-ws), whose
// `resync: true` is RxDB's 'RESYNC' (pull again from the checkpoint).
//
// - HTTP requests go through YibaoClient (its transport, fetch or wx.request; its token, one silent
//   refresh on expiry, retries with backoff): pulls are reads, and pushes are safe to repeat (a repeated push of a draft the
//   server already has comes back as a conflict with the master, never as a second filing).
// - The WebSocket sends the token in connection_init ({"Authorization": "Bearer ..."}); connectionParams
//   is a function, so every reconnect carries a fresh token. A stream the server ends (an expired token)
//   is restarted (every collection, on a new socket): the checkpoints are kept in the database, so
//   nothing is skipped.
// - A login that has ended (ReloginRequired: the refresh was refused, or another tab logged out) is
//   reported once through onSessionLost and stops the replication: nothing it sends can succeed, and it
//   must not carry on for whoever logs in next on the same client. It is never left as an unhandled
//   rejection (graphql-ws's dispose re-throws what connectionParams threw).
// - cancel() is safe on every state, started or not (RxDB 17.6's GraphQL cancel gives back a share of
//   the socket that a state waiting for leadership never took, and throws).
// - Conflicts: the server's master document wins (RxDB's default conflict handler); the server never
//   overwrote anything for them (docs/replication-mobile.md).

import { createRxDatabase, type RxCollection, type RxDatabase, type RxJsonSchema, type RxStorage } from "rxdb";
import { RxReplicationState } from "rxdb/plugins/replication";
import { GRAPHQL_WEBSOCKET_BY_URL, replicateGraphQL, type RxGraphQLReplicationState } from "rxdb/plugins/replication-graphql";
import { getRxStorageMemory } from "rxdb/plugins/storage-memory";

import type { YibaoClient } from "./client.js";
import { setWebSocketImpl, type WebSocketConstructor } from "./ws-shim.js";

export { rewriteMessage, setWebSocketImpl, wxWebSocket } from "./ws-shim.js";
export type { WebSocketConstructor, WxSocketLike } from "./ws-shim.js";

export type CollectionName = "Settlement" | "Contribution" | "AccountFlow" | "Filing" | "FamilyLink" | "Notification";

type FieldType = "string" | "int" | "bool" | "json" | "strings";
interface Field {
  type: FieldType;
  nullable?: boolean;
  /** Part of the push input (writable collections only). */
  input?: boolean;
}

const COMMON: Record<string, Field> = {
  id: { type: "string", input: true },
  personId: { type: "string", input: true },
  updatedAt: { type: "string", input: true },
};

/** The documents' fields as the server sends them (graphql/schema.graphql, XDocument). */
export const COLLECTIONS: Record<CollectionName, { rxName: string; writable: boolean; fields: Record<string, Field> }> = {
  Settlement: {
    rxName: "settlements",
    writable: false,
    fields: {
      ...COMMON,
      settledAt: { type: "string" },
      year: { type: "int" },
      category: { type: "string" },
      categoryLabel: { type: "string" },
      visitScope: { type: "string" },
      facilityName: { type: "string" },
      facilityLevel: { type: "string" },
      totalFen: { type: "int" },
      compliantFen: { type: "int" },
      deductibleFen: { type: "int" },
      basicFen: { type: "int" },
      criticalIllnessFen: { type: "int" },
      assistanceFen: { type: "int" },
      personalAccountFen: { type: "int" },
      cashFen: { type: "int" },
      policyVersion: { type: "string" },
      source: { type: "string" },
      voided: { type: "bool" },
      voidedAt: { type: "string", nullable: true },
    },
  },
  Contribution: {
    rxName: "contributions",
    writable: false,
    fields: {
      ...COMMON,
      year: { type: "int" },
      period: { type: "string" },
      insuranceType: { type: "string" },
      paidAt: { type: "string" },
      amountFen: { type: "int" },
      subsidyFen: { type: "int" },
    },
  },
  AccountFlow: {
    rxName: "accountflows",
    writable: false,
    fields: {
      ...COMMON,
      occurredAt: { type: "string" },
      year: { type: "int" },
      kind: { type: "string" },
      kindLabel: { type: "string" },
      amountFen: { type: "int" },
      balanceAfterFen: { type: "int" },
      settlementId: { type: "string", nullable: true },
    },
  },
  Filing: {
    rxName: "filings",
    writable: true,
    fields: {
      ...COMMON,
      serverId: { type: "string", nullable: true, input: true },
      kind: { type: "string", input: true },
      kindLabel: { type: "string", input: true, nullable: true },
      status: { type: "string", input: true },
      statusLabel: { type: "string", input: true, nullable: true },
      stage: { type: "string", nullable: true, input: true },
      fields: { type: "json", input: true },
      amountFen: { type: "int", nullable: true, input: true },
      linkId: { type: "string", nullable: true, input: true },
      filedByPersonId: { type: "string", nullable: true, input: true },
      dueOn: { type: "string", nullable: true, input: true },
      decisionReason: { type: "string", nullable: true, input: true },
      createdAt: { type: "string", input: true, nullable: true },
      submittedAt: { type: "string", nullable: true, input: true },
      decidedAt: { type: "string", nullable: true, input: true },
      version: { type: "int", input: true, nullable: true },
    },
  },
  FamilyLink: {
    rxName: "familylinks",
    writable: false,
    fields: {
      ...COMMON,
      relationship: { type: "string" },
      relationshipLabel: { type: "string" },
      method: { type: "string" },
      status: { type: "string" },
      myRole: { type: "string" },
      holderPersonId: { type: "string" },
      relativePersonId: { type: "string" },
      holderName: { type: "string" },
      relativeName: { type: "string" },
      relativeIdNumberMasked: { type: "string" },
      permissions: { type: "strings" },
      requestedPermissions: { type: "strings" },
      createdAt: { type: "string" },
      expiresAt: { type: "string", nullable: true },
      decidedAt: { type: "string", nullable: true },
    },
  },
  Notification: {
    rxName: "notifications",
    writable: true,
    fields: {
      ...COMMON,
      kind: { type: "string", input: true },
      title: { type: "string", input: true },
      body: { type: "string", input: true },
      data: { type: "json", input: true },
      createdAt: { type: "string", input: true },
      readAt: { type: "string", nullable: true, input: true },
      linkId: { type: "string", nullable: true, input: true },
    },
  },
};

export const COLLECTION_NAMES = Object.keys(COLLECTIONS) as CollectionName[];

const JSON_TYPES: Record<FieldType, Record<string, unknown>> = {
  string: { type: "string" },
  int: { type: "integer" },
  bool: { type: "boolean" },
  json: { type: "object" },
  strings: { type: "array", items: { type: "string" } },
};

/** The RxDB schema of a collection (`_deleted` is RxDB's own field and is not declared). */
export function rxSchema(name: CollectionName): RxJsonSchema<Record<string, unknown>> {
  const properties: Record<string, unknown> = {};
  const required: string[] = [];
  for (const [field, spec] of Object.entries(COLLECTIONS[name].fields)) {
    const base = JSON_TYPES[spec.type];
    properties[field] = spec.nullable ? { ...base, type: [base.type as string, "null"] } : { ...base };
    if (!spec.nullable) required.push(field);
  }
  properties.id = { type: "string", maxLength: 64 };
  return { version: 0, primaryKey: "id", type: "object", properties, required } as unknown as RxJsonSchema<Record<string, unknown>>;
}

function selection(name: CollectionName): string {
  return [...Object.keys(COLLECTIONS[name].fields), "_deleted"].join(" ");
}

export function pullQuery(name: CollectionName): string {
  return `query Pull${name}($checkpoint: ReplicationCheckpointInput, $limit: Int!) { pull${name}(checkpoint: $checkpoint, limit: $limit) { documents { ${selection(name)} } checkpoint { token } } }`;
}

export function streamQuery(name: CollectionName): string {
  return `subscription Stream${name} { stream${name} { documents { ${selection(name)} } checkpoint { token } resync } }`;
}

export function pushQuery(name: CollectionName): string {
  return `mutation Push${name}($rows: [${name}PushRow!]!) { push${name}(rows: $rows) { ${selection(name)} } }`;
}

/** A document as the push input takes it: only the input's fields (RxDB adds its own, which the server's
 * input type would refuse). */
export function toPushInput(name: CollectionName, doc: Record<string, unknown> | undefined): Record<string, unknown> | null {
  if (!doc) return null;
  const out: Record<string, unknown> = {};
  for (const [field, spec] of Object.entries(COLLECTIONS[name].fields)) {
    if (spec.input && field in doc) out[field] = doc[field] ?? null;
  }
  out._deleted = Boolean(doc._deleted);
  return out;
}

export type YibaoCollections = { [K in CollectionName as (typeof COLLECTIONS)[K]["rxName"]]: RxCollection };

export interface DatabaseOptions {
  name?: string;
  /** Default: in-memory (RxDB's memory storage). */
  storage?: RxStorage<unknown, unknown>;
  multiInstance?: boolean;
}

/** An RxDB database with the six collections (settlements, contributions, accountflows, filings,
 * familylinks, notifications). */
export async function createYibaoDatabase(options: DatabaseOptions = {}): Promise<RxDatabase> {
  const db = await createRxDatabase({
    name: options.name ?? "yibao",
    storage: (options.storage ?? getRxStorageMemory()) as RxStorage<unknown, unknown>,
    multiInstance: options.multiInstance ?? false,
    eventReduce: true,
  });
  const collections: Record<string, { schema: RxJsonSchema<Record<string, unknown>> }> = {};
  for (const name of COLLECTION_NAMES) collections[COLLECTIONS[name].rxName] = { schema: rxSchema(name) };
  await db.addCollections(collections);
  return db;
}

export interface ReplicationOptions {
  /** The server's origin, e.g. `https://yibao.example`; `/graphql` is added (http and ws). */
  baseUrl: string;
  collections?: CollectionName[];
  batchSize?: number;
  live?: boolean;
  retryTimeMs?: number;
  /** Options for graphql-ws's createClient (e.g. retryAttempts, lazy); connectionParams is the SDK's. */
  wsOptions?: Record<string, unknown>;
  /** Called with every replication error (already retried by RxDB). */
  onError?: (collection: CollectionName, error: unknown) => void;
  /** The WebSocket class for the streams (default: the platform's); in a mini-program `wxWebSocket(wx)`. */
  webSocketImpl?: WebSocketConstructor;
  /** Distinguishes replicas of different logins kept in one database (default `yibao`). */
  replicationIdentifierPrefix?: string;
  /** Called once when the login has ended (ReloginRequired from a pull, a push or the stream's token):
   * the replication has stopped itself by then; log in again and start a new one. */
  onSessionLost?: (error: Error) => void;
  /** Called when the server refuses a pushed document for good (bad input such as a typo in an offline
   * draft, no permission, not found, a client id already used): the document stays in the replica as
   * it is, unsent, and the rest of the push goes through. Editing or discarding it sends it again.
   * `field` is as the server names it for that row pushed alone (`rows[0].newDocumentState...`). */
  onPushRefused?: (collection: CollectionName, documentId: string, error: PushRefusal) => void;
}

export interface PushRefusal {
  code: string;
  message: string;
  field: string | null;
}

/** Errors that the same rows sent again would get again: the server's rules refused them. */
const REFUSALS = new Set(["BAD_USER_INPUT", "FORBIDDEN", "NOT_FOUND", "CONFLICT"]);

interface PushAnswer {
  data?: Record<string, unknown> | null;
  errors?: { message: string; extensions?: { code?: string; field?: string } }[];
}

function refusalOf(answer: PushAnswer, field: string): PushRefusal | null {
  if (answer.data?.[field]) return null;
  const error = answer.errors?.find((e) => REFUSALS.has(String(e.extensions?.code)));
  return error ? { code: String(error.extensions?.code), message: error.message, field: error.extensions?.field ?? null } : null;
}

export interface YibaoReplication {
  /** How often the streams were started again after the server ended them. */
  restarts: number;
  /** The current replication state of each collection (replaced on a restart). */
  states: Map<CollectionName, RxGraphQLReplicationState<Record<string, unknown>, { token: string }>>;
  /** Resolves once every collection has finished its first pull (and push). */
  awaitInitialReplication(): Promise<void>;
  /** Resolves when every collection is in sync (nothing left to pull or push right now). */
  awaitInSync(): Promise<void>;
  /** Pull again now, e.g. when the phone comes back online. */
  reSync(): void;
  /** Stops every collection (safe in a tab that never led) and, with a multi-instance database, leaves
   * the leader election first, so that this tab is not handed the lead while it closes. Final: close
   * the database after it (another replication on it would never lead again in this tab). */
  cancel(): Promise<void>;
  /** Set once the login has ended (see onSessionLost). */
  readonly sessionLost: boolean;
}

type State = RxGraphQLReplicationState<Record<string, unknown>, { token: string }>;

/** The SDK's client throws ReloginRequired; replication.ts is bundled apart from it, so not instanceof. */
export function isReloginRequired(error: unknown): error is Error {
  return error instanceof Error && error.name === "ReloginRequired";
}

const baseCancel = RxReplicationState.prototype.cancel;
const guardedSockets = new WeakSet<object>();

/** Makes state.cancel() safe whether or not the state started, and when called again: RxDB's GraphQL cancel gives back the
 * socket share that start takes, which a state still waiting for leadership never took ("missing value
 * from map", and the state is left running). Such a state is stopped by the base class's cancel. The
 * shared socket's dispose is made quiet too: it re-throws what its last connection attempt failed with. */
function guardState(state: State, ws: string | undefined): void {
  let tookSocket = false;
  let cancelling: ReturnType<State["cancel"]> | null = null;
  const rxStart = state.start.bind(state);
  state.start = () => {
    if (cancelling) return Promise.resolve();
    tookSocket = true; // RxDB's start takes its share synchronously, before its own start runs
    const started = rxStart();
    const entry = ws ? (GRAPHQL_WEBSOCKET_BY_URL.get(ws) as { socket: { dispose(): Promise<void> | void } } | undefined) : undefined;
    if (entry && !guardedSockets.has(entry.socket)) {
      guardedSockets.add(entry.socket);
      const dispose = entry.socket.dispose.bind(entry.socket);
      entry.socket.dispose = () => Promise.resolve(dispose()).catch(() => {});
    }
    return started;
  };
  // Once: RxDB's GraphQL cancel gives the share back at once but stops the state later, so a second
  // cancel meanwhile (a lost login's, then the page's) would give it back twice.
  const rxCancel = state.cancel.bind(state);
  state.cancel = () => (cancelling ??= tookSocket ? rxCancel() : (baseCancel.call(state) as ReturnType<State["cancel"]>));
}

function wsUrl(httpUrl: string): string {
  return httpUrl.replace(/^http/, "ws");
}

/** Starts RxDB's GraphQL replication of each collection against the server, through `client`. */
export function startReplication(db: RxDatabase, client: YibaoClient, options: ReplicationOptions): YibaoReplication {
  const http = options.baseUrl.replace(/\/+$/, "") + "/graphql";
  if (options.webSocketImpl) setWebSocketImpl(options.webSocketImpl);
  const names = options.collections ?? COLLECTION_NAMES;
  const states = new Map<CollectionName, State>();
  let cancelled = false;
  const ws = options.live === false ? undefined : wsUrl(http);

  const endSession = (error: Error): void => {
    if (replication.sessionLost) return;
    replication.sessionLost = true;
    void replication.cancel().catch(() => {});
    options.onSessionLost?.(error);
  };
  // Re-thrown so that graphql-ws closes this attempt; the replication is stopped by then.
  const connectionParams = async () => {
    try {
      return { Authorization: `Bearer ${await client.accessToken()}` };
    } catch (error) {
      if (isReloginRequired(error)) endSession(error);
      throw error;
    }
  };

  const start = (name: CollectionName) => {
    const spec = COLLECTIONS[name];
    const collection = db.collections[spec.rxName] as RxCollection<Record<string, unknown>>;
    const state = replicateGraphQL<Record<string, unknown>, { token: string }>({
      collection,
      replicationIdentifier: `${options.replicationIdentifierPrefix ?? "yibao"}-${name}-${http}`,
      url: { http, ws },
      live: options.live ?? true,
      retryTime: options.retryTimeMs ?? 5_000,
      waitForLeadership: db.multiInstance,
      deletedField: "_deleted",
      pull: {
        batchSize: options.batchSize ?? 100,
        queryBuilder: (checkpoint, limit) => ({
          query: pullQuery(name),
          operationName: `Pull${name}`,
          variables: { checkpoint: checkpoint ? { token: checkpoint.token } : null, limit },
        }),
        streamQueryBuilder: () => ({ query: streamQuery(name), operationName: `Stream${name}`, variables: {} }),
        responseModifier: (response, origin) => {
          // The stream's resync signal (visible set changed, lag, a change it cannot serve as a delta).
          if (origin === "stream" && response?.resync) return "RESYNC" as never;
          return { documents: response.documents, checkpoint: response.checkpoint };
        },
        wsOptions: { ...(options.wsOptions ?? {}), connectionParams } as never,
      },
      push: spec.writable
        ? {
            batchSize: 20,
            queryBuilder: (rows) => ({
              query: pushQuery(name),
              operationName: `Push${name}`,
              variables: {
                rows: rows.map((row) => ({
                  assumedMasterState: toPushInput(name, row.assumedMasterState as Record<string, unknown> | undefined),
                  newDocumentState: toPushInput(name, row.newDocumentState as Record<string, unknown>),
                })),
              },
            }),
          }
        : undefined,
    });
    // RxDB's own request helper needs fetch, Request and Headers (a mini-program has none); the SDK's
    // client sends it instead (its transport, its token, one silent refresh, retries). Set before the
    // replication starts (RxDB starts it in a later microtask).
    const send = (query: unknown): Promise<PushAnswer> => client.execute(JSON.stringify(query), { idempotent: true });
    // RxDB sends a failed push's rows again as they were, forever: one row the server refuses (a typo
    // in a draft made offline) would keep every later change of the collection off the server, with
    // nothing said. A refused push is sent again one row at a time (rows the server applied before the
    // refusal come back equal, a no-op, or as the same conflict); a refused row is reported and left
    // out, so RxDB takes it as sent and goes on.
    const push = async (query: { variables: { rows: { newDocumentState: { id?: unknown } | null }[] } }): Promise<PushAnswer> => {
      const field = `push${name}`;
      const whole = await send(query);
      const rows = query.variables.rows;
      if (!refusalOf(whole, field)) return whole;
      const conflicts: unknown[] = [];
      for (const row of rows) {
        const alone = await send({ ...query, variables: { ...query.variables, rows: [row] } });
        const refusal = refusalOf(alone, field);
        if (refusal) {
          options.onPushRefused?.(name, String(row.newDocumentState?.id ?? ""), refusal);
          continue;
        }
        if (!alone.data?.[field]) return alone; // another failure (network, overload): RxDB retries
        conflicts.push(...(alone.data[field] as unknown[]));
      }
      return { data: { [field]: conflicts } };
    };
    state.graphQLRequest = (async (query: { operationName?: string }) => {
      try {
        if (spec.writable && query.operationName === `Push${name}`) return await push(query as never);
        return await client.execute(JSON.stringify(query), { idempotent: true });
      } catch (error) {
        if (isReloginRequired(error)) endSession(error);
        throw error;
      }
    }) as never;
    guardState(state, ws);
    state.error$.subscribe((error: unknown) => {
      options.onError?.(name, error);
      // RxDB retries pulls and pushes itself (its errors are RxErrors, code RC_*); a stream the server
      // ended (expired token, revoked login) it does not retry.
      const code = (error as { code?: string } | null)?.code;
      if (typeof code === "string" && code.startsWith("RC_")) return;
      if (states.get(name) === state) restartAll();
    });
    states.set(name, state);
    return state;
  };

  // Every collection's stream shares one socket, authenticated once in connection_init: a fresh token
  // needs a new socket, so all collections stop (the socket closes with the last one) and start again.
  // Their checkpoints are in the database: the new start pulls what came meanwhile (RESYNC on connect).
  let restarting = false;
  const restartAll = () => {
    if (cancelled || restarting || replication.sessionLost) return;
    restarting = true;
    replication.restarts += 1;
    void Promise.all([...states.values()].map((s) => s.cancel())).then(() => {
      setTimeout(() => {
        restarting = false;
        if (cancelled) return;
        for (const name of names) start(name);
      }, options.retryTimeMs ?? 5_000);
    });
  };

  for (const name of names) start(name);

  const replication: YibaoReplication & { sessionLost: boolean } = {
    restarts: 0,
    sessionLost: false,
    states,
    async awaitInitialReplication() {
      await Promise.all([...states.values()].map((s) => s.awaitInitialReplication()));
    },
    async awaitInSync() {
      await Promise.all([...states.values()].map((s) => s.awaitInSync()));
    },
    reSync() {
      for (const state of states.values()) state.reSync();
    },
    async cancel() {
      cancelled = true;
      // Leaving the election first: the other tabs' closing must not hand this closing tab the lead.
      if (db.multiInstance) {
        try {
          void db.leaderElector().die().catch(() => {});
        } catch {
          // no leader-election plugin: nothing waits for leadership
        }
      }
      await Promise.all([...states.values()].map((s) => s.cancel()));
    },
  };
  return replication;
}
