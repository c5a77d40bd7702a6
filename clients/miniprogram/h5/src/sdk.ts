// The page's one door to the SDK (clients/miniprogram/src): the client with silent refresh, the
// offline voucher, and what the page keeps for offline use (who is logged in, the family links).
import { YibaoClient } from "../../src/client";
import { ReloginRequired, YibaoError, BadResponse } from "../../src/errors";
import { type Storage, forgetPerson, localStorageAdapter, personVoucherPrefix } from "../../src/storage";
import { NetworkError, createFetchTransport } from "../../src/transport";
import type * as T from "../../src/types";
import type { OfflineVoucher } from "../../src/voucher";

// The offline voucher (Ed25519) is a chunk of its own, fetched once the online QR shows: the first
// load stays small, and the module is in memory before the signal goes.
const voucherModule = () => import("../../src/voucher");

export type Me = T.Me;
export type LinkSummary = T.FamilyLink;

export type OfflineCode =
  | { state: "ok"; code: string }
  | { state: "expired"; notAfter: string; message: string }
  | { state: "none" | "unavailable"; message: string };

interface Prefetched {
  voucher: Promise<{ code: string; expiresAt: string }>;
  links: Promise<LinkSummary[]>;
}

const SESSION_KEY = "yibao.session"; // the SDK's default, named here for the other tabs' storage events
const ME_KEY = "yibao.h5.me";
const LINKS_KEY = "yibao.h5.links.";
/** The drafts the server refused for good (onPushRefused), by client id: `yibao.h5.refused.<id>`. */
const REFUSED_KEY = "yibao.h5.refused.";
/** Whose a stored key is: `yibao.h5.links.<id>[.all]` and `yibao.h5.refused.<id>` (the page's) and the SDK's offline voucher
 * under personVoucherPrefix(<id>). Care mode (`yibao.h5.care.<id>`, app.ts) is not among them: it is
 * remembered per user, past a logout. */
const PERSON_KEY = /^(?:yibao\.h5\.links\.|yibao\.h5\.refused\.|yibao\.voucher\.)([^.]*)/;

function readJson<V>(key: string): V | null {
  try {
    const raw = localStorage.getItem(key);
    return raw ? (JSON.parse(raw) as V) : null;
  } catch {
    return null;
  }
}

/** The SDK's localStorage adapter lists its keys synchronously. */
function storageKeys(storage: Storage): string[] {
  try {
    return (storage.keys?.() as string[] | undefined) ?? [];
  } catch {
    return []; // storage disabled: nothing was kept
  }
}

function removeKey(key: string): void {
  try {
    localStorage.removeItem(key);
  } catch {
    // storage disabled: nothing was kept
  }
}

function writeJson(key: string, value: unknown): void {
  try {
    localStorage.setItem(key, JSON.stringify(value));
  } catch {
    // storage full or off: the page still works online
  }
}

export function createSdk(baseUrl: string) {
  const storage = localStorageAdapter();
  const client = new YibaoClient({ baseUrl, transport: createFetchTransport(baseUrl), storage, storageKey: SESSION_KEY, timeoutMs: 20_000 });
  let online = navigator.onLine;
  let prefetched: Prefetched | null = null;
  const sessionLost = new Set<() => void>();
  client.onSessionChange((session) => {
    if (session === null) for (const listener of sessionLost) listener();
  });

  const isNetworkError = (error: unknown): boolean =>
    error instanceof NetworkError || (error instanceof BadResponse && error.status >= 500);
  // One device key and certificate set per person on this browser: a shared phone never shows one
  // person's offline code to another.
  const vouchers = new Map<string, OfflineVoucher>();
  const voucherFor = async (personId = readJson<Me>(ME_KEY)?.id ?? "anonymous"): Promise<OfflineVoucher> => {
    let voucher = vouchers.get(personId);
    if (!voucher) {
      const { OfflineVoucher } = await voucherModule();
      voucher = new OfflineVoucher({ client, storage, keyPrefix: personVoucherPrefix(personId) });
      vouchers.set(personId, voucher);
    }
    return voucher;
  };
  const isReloginError = (error: unknown): boolean => error instanceof ReloginRequired;

  const sdk = {
    client,
    storage,
    baseUrl,
    /** The storage keys another tab's changes to which this tab follows (main.ts). */
    keys: { session: SESSION_KEY, me: ME_KEY },
    isNetworkError,
    isReloginError,
    isYibaoError: (error: unknown): error is YibaoError => error instanceof YibaoError,
    get online() {
      return online;
    },
    setOnline(value: boolean) {
      online = value;
    },
    onSessionLost(listener: () => void) {
      sessionLost.add(listener);
    },
    /** The SDK's replication found the login ended (its onSessionLost). */
    reportSessionLost(): void {
      for (const listener of sessionLost) listener();
    },

    /** Logs in; asks for my QR code and family links beside `me`, not after it (a round trip less
     * before the QR on a slow network). The QR page takes them with takePrefetched. */
    async login(code: string): Promise<Me> {
      await client.login(code, "demo");
      prefetched = { voucher: sdk.issueVoucher(null), links: client.familyLinks(false) };
      prefetched.voucher.catch(() => {});
      prefetched.links.catch(() => {});
      const me = await client.me();
      writeJson(ME_KEY, me);
      await sdk.forgetOthers(me.id);
      return me;
    },

    /** Ends the link (either side may), at once on the server; its offline certificate goes too. */
    async unlinkFamily(personId: string, linkId: string): Promise<void> {
      await client.unlinkFamily(linkId);
      sdk.dropCachedLink(personId, linkId);
      await sdk.forgetLinkCertificate(personId, linkId);
    },

    takePrefetched(): Prefetched | null {
      const taken = prefetched;
      prefetched = null;
      return taken;
    },

    /** Ends the login (on the server when online). The person's data on this phone goes with
     * forgetPerson (main.ts, with the replica's database). */
    async logout(): Promise<void> {
      removeKey(ME_KEY);
      prefetched = null;
      await client.logout();
    },

    /** The login ended without a logout (refused refresh, logged out on another device): who was
     * logged in is forgotten; their data stays for their next login and goes at another's (login). */
    sessionEnded(): void {
      removeKey(ME_KEY);
      prefetched = null;
    },

    /** Removes what this browser keeps of a person (a logout on a shared phone): the cached family
     * links, and what the SDK keeps of them (the offline voucher's device key, certificates and
     * counter: the SDK's forgetPerson, as a mini-program's logout does it). Care mode stays. */
    async forgetPerson(personId: string): Promise<void> {
      vouchers.delete(personId);
      removeKey(LINKS_KEY + personId);
      removeKey(`${LINKS_KEY}${personId}.all`);
      removeKey(REFUSED_KEY + personId);
      if (readJson<Me>(ME_KEY)?.id === personId) removeKey(ME_KEY);
      try {
        await forgetPerson(storage, personId);
      } catch {
        // storage disabled: nothing was kept
      }
    },

    /** Removes what this browser keeps of anyone but `personId` (left by a login that ended without
     * a logout): one person's data on the phone at a time. */
    async forgetOthers(personId: string): Promise<void> {
      const owners = new Set(storageKeys(storage).map((key) => PERSON_KEY.exec(key)?.[1]));
      for (const owner of owners) if (owner !== undefined && owner !== personId) await sdk.forgetPerson(owner);
    },

    /** Removes the offline certificate this phone holds for a relative's link (the link ended, or no
     * longer lets me show their code): no code of theirs can be composed here any more. */
    async forgetLinkCertificate(personId: string, linkId: string): Promise<void> {
      if (sdk.certifiedLinks(personId).includes(linkId)) await (await voucherFor(personId)).forget(linkId);
    },

    /** An ended link leaves the links kept for offline use (else the offline QR page offered it). */
    dropCachedLink(personId: string, linkId: string): void {
      for (const key of [LINKS_KEY + personId, `${LINKS_KEY}${personId}.all`]) {
        const links = readJson<LinkSummary[]>(key);
        if (links?.some((link) => link.id === linkId)) writeJson(key, links.filter((link) => link.id !== linkId));
      }
    },

    /** Why the server refused a person's drafts (client id -> its message), kept past a reload: RxDB
     * takes a refused draft as sent and will not send it again by itself. */
    refusals(personId: string): Record<string, string> {
      return readJson<Record<string, string>>(REFUSED_KEY + personId) ?? {};
    },

    /** Records (or, with null, clears) the server's refusal of a draft; the filings page redraws. */
    setRefusal(personId: string, clientId: string, message: string | null): void {
      const refusals = sdk.refusals(personId);
      if (message === null) delete refusals[clientId];
      else refusals[clientId] = message;
      if (Object.keys(refusals).length) writeJson(REFUSED_KEY + personId, refusals);
      else removeKey(REFUSED_KEY + personId);
      window.dispatchEvent(new CustomEvent("yibao:refused"));
    },

    /** The links whose offline certificate this phone holds for `personId`. */
    certifiedLinks(personId: string): string[] {
      const prefix = `${personVoucherPrefix(personId)}.certificate.`;
      return storageKeys(storage)
        .filter((key) => key.startsWith(prefix))
        .map((key) => key.slice(prefix.length))
        .filter((linkId) => linkId !== "self");
    },

    /** Who is logged in: as last seen (checked with the server in the background, so the QR is not
     * held up by a round trip), else asked of the server. Null: log in. */
    async currentUser(isOnline: boolean): Promise<Me | null> {
      if (!(await client.isLoggedIn())) return null;
      const cached = readJson<Me>(ME_KEY);
      if (cached) {
        if (isOnline) void client.me().then((me) => writeJson(ME_KEY, me), () => {}); // a lost session shows via onSessionChange
        return cached;
      }
      try {
        const me = await client.me();
        writeJson(ME_KEY, me);
        return me;
      } catch (error) {
        if (isReloginError(error)) return null;
        if (isNetworkError(error) && cached) return cached;
        throw error;
      }
    },

    /** The family links, from the server when online (kept for offline use). */
    async familyLinks(isOnline: boolean, includeClosed = false, pending?: Promise<LinkSummary[]>): Promise<LinkSummary[]> {
      const me = readJson<Me>(ME_KEY);
      const key = LINKS_KEY + (me?.id ?? "") + (includeClosed ? ".all" : "");
      if (isOnline) {
        try {
          const links = await (pending ?? client.familyLinks(includeClosed));
          writeJson(key, links);
          return links;
        } catch (error) {
          if (!isNetworkError(error)) throw error;
        }
      }
      return readJson<LinkSummary[]>(key) ?? [];
    },

    /** A fresh online code. Only the code is asked for, not the server's QR image (about 20 KB of SVG,
     * uncompressed, every minute): the page draws the QR itself, as it does the offline form. */
    async issueVoucher(linkId: string | null): Promise<{ code: string; expiresAt: string }> {
      const data = await client.query<{ issueVoucher: { code: string; expiresAt: string } }>(
        "mutation IssueVoucherCode($linkId: ID) { issueVoucher(linkId: $linkId) { code expiresAt } }",
        { linkId },
        { idempotent: true, operationName: "IssueVoucherCode" }, // a repeat only makes another code
      );
      return data.issueVoucher;
    },

    /** The offline form, composed here without signal, or why there is none (past the certificate). */
    async offlineCode(linkId: string | null): Promise<OfflineCode> {
      const voucher = await voucherFor();
      try {
        return { state: "ok", code: (await voucher.code(linkId)).code };
      } catch (error) {
        if (!(error instanceof (await voucherModule()).OfflineCodeUnavailable)) throw error;
        const status = await voucher.status(linkId);
        if (status.state !== "expired") return { state: status.state === "none" ? "none" : "unavailable", message: status.message };
        return { state: "expired", notAfter: new Date(status.notAfter ?? 0).toISOString(), message: status.message };
      }
    },

    /** Online: certify this phone's key for the offline form (again when it nears its end). */
    async ensureDeviceCertificate(linkId: string | null): Promise<void> {
      await (await voucherFor()).ensureCertified(linkId);
    },

    /** A bearer token for the REST attachment endpoint (refreshed first if it is about to expire). */
    accessToken(): Promise<string> {
      return client.accessToken();
    },
  };
  return sdk;
}

export type Sdk = ReturnType<typeof createSdk>;
