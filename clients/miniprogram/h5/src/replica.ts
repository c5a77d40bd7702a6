// The page's local replica: what it last read of the resident's records, family and filings, kept in
// the browser's storage per user so that the pages work without signal, and an outbox of filing drafts
// made offline. A draft carries a client-made UUID (createFiling's clientId), so sending it again after
// a timeout or a lost answer makes no second filing; it leaves the outbox once the server has it.
import { uuid4 } from "../../src/client";
import type * as T from "../../src/types";

import type { Sdk } from "./sdk";

export interface Records {
  settlements: T.Settlement[];
  contributions: T.Contribution[];
  accountFlows: T.AccountFlow[];
  balanceFen: number | null;
  fetchedAt: string;
}

export interface Draft {
  clientId: string;
  kind: T.FilingKindCode;
  fields: Record<string, unknown>;
  linkId: string | null;
  createdAt: string;
}

const PREFIX = "yibao.h5.replica.";

export class Replica {
  private syncing: Promise<number> | null = null;

  constructor(
    private readonly sdk: Sdk,
    private readonly personId: string,
  ) {}

  private key(name: string): string {
    return `${PREFIX}${this.personId}.${name}`;
  }

  private read<V>(name: string): V | null {
    try {
      const raw = localStorage.getItem(this.key(name));
      return raw ? (JSON.parse(raw) as V) : null;
    } catch {
      return null;
    }
  }

  private write(name: string, value: unknown): void {
    localStorage.setItem(this.key(name), JSON.stringify(value));
  }

  /** Records of me (linkId null) or of a relative (settlements only, as `relative` shows them). */
  async records(linkId: string | null, online: boolean): Promise<Records | null> {
    const name = linkId ? `records.link.${linkId}` : "records.me";
    if (online) {
      try {
        const fresh = linkId ? await this.fetchRelative(linkId) : await this.fetchMine();
        this.write(name, fresh);
        return fresh;
      } catch (error) {
        if (!this.sdk.isNetworkError(error)) throw error;
      }
    }
    return this.read<Records>(name);
  }

  private async fetchMine(): Promise<Records> {
    const client = this.sdk.client;
    const [settlements, contributions, flows, me] = await Promise.all([
      client.settlements({ first: 50 }),
      client.contributions({ first: 50 }),
      client.accountFlows({ first: 50 }),
      client.me(),
    ]);
    return {
      settlements: settlements.edges.map((edge) => edge.node),
      contributions: contributions.edges.map((edge) => edge.node),
      accountFlows: flows.edges.map((edge) => edge.node),
      balanceFen: me.personalAccount?.balanceFen ?? null,
      fetchedAt: new Date().toISOString(),
    };
  }

  private async fetchRelative(linkId: string): Promise<Records> {
    const relative = await this.sdk.client.relative(linkId, 50);
    return {
      settlements: relative.settlements.edges.map((edge) => edge.node),
      contributions: [],
      accountFlows: [],
      balanceFen: null,
      fetchedAt: new Date().toISOString(),
    };
  }

  /** My filings (and those filed for me), as last read from the server. */
  async filings(online: boolean): Promise<T.Filing[]> {
    if (online) {
      try {
        await this.sync();
        const page = await this.sdk.client.myFilings({ first: 50 });
        const filings = page.edges.map((edge) => edge.node);
        this.write("filings", filings);
        return filings;
      } catch (error) {
        if (!this.sdk.isNetworkError(error)) throw error;
      }
    }
    return this.read<T.Filing[]>("filings") ?? [];
  }

  drafts(): Draft[] {
    return this.read<Draft[]>("outbox") ?? [];
  }

  /** Keeps a new draft here first (so no signal loses it), then sends it when online. */
  addDraft(kind: T.FilingKindCode, fields: Record<string, unknown>, linkId: string | null): Draft {
    const draft: Draft = { clientId: uuid4(), kind, fields, linkId, createdAt: new Date().toISOString() };
    this.write("outbox", [...this.drafts(), draft]);
    return draft;
  }

  /** Sends the outbox, one draft at a time, oldest first; returns how many the server now has. */
  sync(): Promise<number> {
    if (!this.syncing) {
      this.syncing = this.flush().finally(() => {
        this.syncing = null;
      });
    }
    return this.syncing;
  }

  private async flush(): Promise<number> {
    let sent = 0;
    for (const draft of this.drafts()) {
      try {
        await this.sdk.client.createFiling({ clientId: draft.clientId, kind: draft.kind, fields: draft.fields, linkId: draft.linkId, submit: false });
      } catch (error) {
        if (this.sdk.isNetworkError(error)) break; // still offline: try again on the next 'online'
        if (!this.sdk.isYibaoError(error)) throw error;
        // The server refused the draft (its rules): keep it, marked, for the resident to see.
        this.write("outbox", this.drafts().map((d) => (d.clientId === draft.clientId ? { ...d, error: error.message } : d)));
        continue;
      }
      this.write("outbox", this.drafts().filter((d) => d.clientId !== draft.clientId));
      sent += 1;
    }
    return sent;
  }
}

const replicas = new Map<string, Replica>();

export function replicaFor(sdk: Sdk, personId: string): Replica {
  let replica = replicas.get(personId);
  if (!replica) {
    replica = new Replica(sdk, personId);
    replicas.set(personId, replica);
  }
  return replica;
}
