// The page's local replica: the SDK's RxDB database (clients/miniprogram/src/replication.ts) of the six
// collections, kept in sync with the server by RxDB's GraphQL replication (pull, push of filing drafts,
// the live stream over graphql-ws). The pages read it, with or without signal, and re-render when it
// changes. One database per person on this browser, in IndexedDB (so a later visit pulls only what is
// new) or in memory where IndexedDB is missing. A filing draft made offline is a document with a
// client-made UUID; RxDB pushes it when the signal returns, and the server's master (with its serverId)
// comes back through the pull or the stream.
//
// Several tabs of the page share the database (multiInstance): RxDB elects one of them to replicate
// and tells the others of every write, so a draft saved in one tab shows in the other at once. One
// person's data on the phone at a time: a logout removes the database, and a login removes any that
// another person's login left behind (it ended without a logout).
import { type RxChangeEvent, type RxDatabase, addRxPlugin, removeRxDatabase } from "rxdb";
import { RxDBLeaderElectionPlugin } from "rxdb/plugins/leader-election";
import { getRxStorageDexie } from "rxdb/plugins/storage-dexie";

import { uuid4 } from "../../src/client";
import { type YibaoReplication, createYibaoDatabase, startReplication } from "../../src/replication";

import type { Sdk } from "./sdk";

export type Doc = Record<string, unknown> & { id: string; personId: string; updatedAt: string };

export interface Records {
  settlements: Doc[];
  contributions: Doc[];
  accountFlows: Doc[];
}

addRxPlugin(RxDBLeaderElectionPlugin);

const hasIndexedDb = (): boolean => typeof indexedDB !== "undefined";
const databaseName = (personId: string): string => `yibao-h5-${personId.replace(/[^0-9a-z]/gi, "")}`;
/** The person of an IndexedDB database that RxDB's dexie storage made for a replica
 * (`rxdb-dexie-yibao-h5-<id>--<version>--<collection>`). */
const DATABASE_OF = /(?:^|-)yibao-h5-([0-9a-z]+)--/i;

/** A link whose relative's offline code this phone may still compose: active, mine to show. (The
 * replica has the server's own spelling, `active` and `show_voucher`; GraphQL's enums are upper case.) */
const showable = (doc: Record<string, unknown> | undefined): boolean =>
  !!doc &&
  !doc._deleted &&
  String(doc.status).toUpperCase() === "ACTIVE" &&
  doc.myRole === "holder" &&
  Array.isArray(doc.permissions) &&
  doc.permissions.some((permission) => String(permission).toUpperCase() === "SHOW_VOUCHER");

const byDesc = (field: string) => (a: Doc, b: Doc) => String(b[field] ?? "").localeCompare(String(a[field] ?? ""));

export class Replica {
  private readonly stops: (() => void)[] = [];

  private constructor(
    readonly db: RxDatabase,
    readonly replication: YibaoReplication,
    readonly personId: string,
  ) {}

  static async open(sdk: Sdk, personId: string): Promise<Replica> {
    await removeOtherDatabases(personId).catch(() => {}); // another tab may be removing them too
    const storage = hasIndexedDb() ? getRxStorageDexie() : undefined;
    const db = await createYibaoDatabase({ name: databaseName(personId), storage: storage as never, multiInstance: hasIndexedDb() });
    const replication = startReplication(db, sdk.client, {
      baseUrl: sdk.baseUrl,
      replicationIdentifierPrefix: `h5-${personId}`,
      retryTimeMs: 3_000,
      wsOptions: { retryAttempts: Infinity, shouldRetry: () => true },
      // The login ended where no page call sees it (the stream's socket asking for a token, e.g. in a
      // tab handed the lead as the login ended elsewhere): the replication has stopped; the page says so.
      onSessionLost: () => sdk.reportSessionLost(),
      // A draft the server refused (a typo made offline, a region that needs no filing): it stays on the
      // phone, its card says why, and the resident discards it; the drafts after it go through.
      onPushRefused: (collection, id, error) => {
        if (collection === "Filing") sdk.setRefusal(personId, id, error.message);
      },
    });
    const replica = new Replica(db, replication, personId);
    replica.forgetEndedLinks(sdk);
    return replica;
  }

  /** A relative's offline certificate goes when their link leaves the replica (ended, declined,
   * expired: the server deletes closed links) or stops letting me show their code. Each change is
   * acted on as it comes; after the first pull, certificates of links the replica does not hold are
   * swept too (ended while this phone had no replica, e.g. before a logout's wipe was possible). */
  private forgetEndedLinks(sdk: Sdk): void {
    const forget = (linkId: string): void => void sdk.forgetLinkCertificate(this.personId, linkId).catch(() => {});
    const links = this.db.collections.familylinks!;
    const subscription = links.$.subscribe((event: RxChangeEvent<Record<string, unknown>>) => {
      const doc = event.documentData as Record<string, unknown> | undefined;
      if (!doc || doc._deleted) sdk.dropCachedLink(this.personId, event.documentId);
      if (!showable(doc)) forget(event.documentId);
    });
    this.stops.push(() => subscription.unsubscribe());
    let stopped = false;
    this.stops.push(() => (stopped = true));
    void this.replication.states.get("FamilyLink")
      ?.awaitInitialReplication()
      .then(async () => {
        if (stopped) return;
        const kept = new Set((await links.find().exec()).filter((doc) => showable(doc.toJSON() as Record<string, unknown>)).map((doc) => doc.primary));
        for (const linkId of sdk.certifiedLinks(this.personId)) if (!kept.has(linkId)) forget(linkId);
      })
      .catch(() => {});
  }

  private async all(collection: string, selector: Record<string, unknown> = {}): Promise<Doc[]> {
    const docs = await this.db.collections[collection]!.find({ selector }).exec();
    return docs.map((doc) => doc.toJSON() as Doc);
  }

  /** Waits (bounded) for the first pull when the replica is still empty and the phone is online. */
  async ready(online: boolean, timeoutMs = 20_000): Promise<void> {
    if (!online) return;
    await Promise.race([
      this.replication.awaitInitialReplication(),
      new Promise((resolve) => setTimeout(resolve, timeoutMs)),
    ]);
  }

  async records(personId: string): Promise<Records> {
    const [settlements, contributions, accountFlows] = await Promise.all([
      this.all("settlements", { personId }),
      this.all("contributions", { personId }),
      this.all("accountflows", { personId }),
    ]);
    return {
      settlements: settlements.sort(byDesc("settledAt")),
      contributions: contributions.sort(byDesc("paidAt")),
      accountFlows: accountFlows.sort(byDesc("occurredAt")),
    };
  }

  async familyLinks(): Promise<Doc[]> {
    return (await this.all("familylinks")).sort(byDesc("createdAt"));
  }

  async filings(): Promise<Doc[]> {
    return (await this.all("filings")).sort(byDesc("createdAt"));
  }

  async notifications(): Promise<Doc[]> {
    return (await this.all("notifications")).sort(byDesc("createdAt"));
  }

  /** A new draft, in the replica at once (offline too); RxDB pushes it to the server. */
  async addDraft(kind: string, kindLabel: string, fields: Record<string, unknown>, personId: string, linkId: string | null): Promise<string> {
    const now = new Date().toISOString();
    const id = uuid4();
    await this.db.collections.filings!.insert({
      id,
      serverId: null,
      personId,
      updatedAt: now,
      kind,
      kindLabel,
      status: "draft",
      statusLabel: "草稿",
      stage: null,
      fields,
      amountFen: null,
      linkId,
      filedByPersonId: null,
      dueOn: null,
      decisionReason: null,
      createdAt: now,
      submittedAt: null,
      decidedAt: null,
      version: null,
    });
    return id;
  }

  /** Removes a draft that never reached the server (RxDB pushes the removal, which the server drops). */
  async discardLocal(clientId: string): Promise<void> {
    await (await this.db.collections.filings!.findOne(clientId).exec())?.remove();
  }

  /** Calls `listener` after these collections change (at most every 150 ms: a first pull writes
   * hundreds of documents); returns the unsubscribe. */
  watch(collections: string[], listener: () => void): () => void {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const changed = (): void => {
      if (timer === undefined) timer = setTimeout(() => ((timer = undefined), listener()), 150);
    };
    const subscriptions = collections.map((name) => this.db.collections[name]!.$.subscribe(changed));
    return () => {
      clearTimeout(timer);
      for (const subscription of subscriptions) subscription.unsubscribe();
    };
  }

  /** Back online: pull and push now rather than at the next retry. */
  reSync(): void {
    this.replication.reSync();
  }

  async close(): Promise<void> {
    for (const stop of this.stops) stop();
    // The SDK's cancel leaves the leader election first (a closing tab must not be handed the lead) and
    // is safe in a tab that never led.
    await this.replication.cancel();
    await this.db.close();
  }
}

/** Removes a person's replica from this browser (closed first: see closeReplicas). */
export async function removeReplica(personId: string): Promise<void> {
  if (!hasIndexedDb()) return; // in memory: gone with the page
  await removeDatabase(databaseName(personId));
}

/** Deletes the IndexedDB databases RxDB's dexie storage made for `name` (one per collection, one per
 * replication's metadata, one for RxDB's own records): that is the whole replica. RxDB's own removal
 * only empties them (they stay, named after the person), and two tabs running it at once (both
 * opening the next person's replica) trip over each other; IndexedDB queues two deletions of one
 * database instead. Without `indexedDB.databases()` (older browsers) RxDB's removal empties them. */
async function removeDatabase(name: string): Promise<void> {
  if (typeof indexedDB.databases !== "function") {
    await removeRxDatabase(name, getRxStorageDexie(), true);
    return;
  }
  const prefix = `rxdb-dexie-${name}--`;
  const files = (await indexedDB.databases()).map((db) => db.name ?? "").filter((file) => file.startsWith(prefix));
  await Promise.all(
    files.map(
      (file) =>
        new Promise<void>((resolve) => {
          // Blocked: another tab still has it open; IndexedDB deletes it once that tab lets go.
          const request = indexedDB.deleteDatabase(file);
          request.onsuccess = request.onerror = request.onblocked = () => resolve();
        }),
    ),
  );
}

/** Removes every replica on this browser but `personId`'s. */
async function removeOtherDatabases(personId: string): Promise<void> {
  if (!hasIndexedDb() || typeof indexedDB.databases !== "function") return;
  const mine = databaseName(personId).slice("yibao-h5-".length);
  const others = new Set<string>();
  for (const { name } of await indexedDB.databases()) {
    const owner = name ? DATABASE_OF.exec(name)?.[1] : undefined;
    if (owner && owner !== mine) others.add(owner);
  }
  await Promise.all([...others].map((owner) => removeDatabase(`yibao-h5-${owner}`)));
}

const opening = new Map<string, Promise<Replica>>();

/** The replica of the person logged in (opened once per page load). */
export function replicaFor(sdk: Sdk, personId: string): Promise<Replica> {
  let replica = opening.get(personId);
  if (!replica) {
    replica = Replica.open(sdk, personId);
    replica.catch(() => opening.delete(personId));
    opening.set(personId, replica);
  }
  return replica;
}

/** Stops every open replica (a logout or a lost session: the next login opens its own). */
export async function closeReplicas(): Promise<void> {
  const all = [...opening.values()];
  opening.clear();
  await Promise.all(all.map(async (pending) => (await pending).close().catch(() => {})));
}
