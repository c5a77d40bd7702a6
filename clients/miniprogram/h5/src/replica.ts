// The page's local replica: the SDK's RxDB database (clients/miniprogram/src/replication.ts) of the six
// collections, kept in sync with the server by RxDB's GraphQL replication (pull, push of filing drafts,
// the live stream over graphql-ws). The pages read it, with or without signal, and re-render when it
// changes. One database per person on this browser, in IndexedDB (so a later visit pulls only what is
// new) or in memory where IndexedDB is missing. A filing draft made offline is a document with a
// client-made UUID; RxDB pushes it when the signal returns, and the server's master (with its serverId)
// comes back through the pull or the stream.
import type { RxDatabase } from "rxdb";
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

const byDesc = (field: string) => (a: Doc, b: Doc) => String(b[field] ?? "").localeCompare(String(a[field] ?? ""));

export class Replica {
  private constructor(
    readonly db: RxDatabase,
    readonly replication: YibaoReplication,
    readonly personId: string,
  ) {}

  static async open(sdk: Sdk, personId: string): Promise<Replica> {
    const name = `yibao-h5-${personId.replace(/[^0-9a-z]/gi, "")}`;
    const storage = typeof indexedDB === "undefined" ? undefined : getRxStorageDexie();
    const db = await createYibaoDatabase({ name, storage: storage as never });
    const replication = startReplication(db, sdk.client, {
      baseUrl: sdk.baseUrl,
      replicationIdentifierPrefix: `h5-${personId}`,
      retryTimeMs: 3_000,
      wsOptions: { retryAttempts: Infinity, shouldRetry: () => true },
    });
    return new Replica(db, replication, personId);
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
    await this.replication.cancel();
    await this.db.close();
  }
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

/** Stops every open replica (a logout: the next login opens its own). */
export async function closeReplicas(): Promise<void> {
  const all = [...opening.values()];
  opening.clear();
  await Promise.all(all.map(async (pending) => (await pending).close().catch(() => {})));
}
