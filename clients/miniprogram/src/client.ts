// YibaoClient: login (a mini-program `code` -> tokens), silent refresh, GraphQL calls with retries.
//
// - The access token is refreshed shortly before it expires, and once more when the server says
//   UNAUTHENTICATED (a clock that runs slow, a key rotated...). One refresh runs at a time: concurrent
//   callers wait for the same one, because a refresh token works once and a reused one ends the login.
// - A refresh the server refuses ends the session: the caller gets ReloginRequired (登录已过期，请重新登录)
//   and onSessionChange listeners hear `null`.
// - Network failures (timeouts, no signal, a proxy's 502/503/504) are retried with backoff only for
//   calls that are safe to repeat: queries, and mutations that carry a client-made id (createFiling's
//   clientId) or are idempotent on the server. Other mutations fail at once, so nothing is written twice.
//   The refresh is retried too: the server takes the refresh token it has just rotated once more
//   within a short grace window (api/auth/service.py), so a refresh that reached the server but whose
//   answer was lost is sent again with the same token instead of ending the login. It stays one refresh
//   at a time: the retries happen inside it.

import { BadResponse, GraphQLErrorShape, ReloginRequired, YibaoError } from "./errors.js";
import { OPERATIONS, OperationName } from "./operations.generated.js";
import type { Storage } from "./storage.js";
import { type RandomBytes, type RandomSource, randomSource, randomUuid, syncRandomBytes } from "./random.js";
import { NetworkError, Transport } from "./transport.js";
import type * as T from "./types.js";

export interface Session {
  accessToken: string;
  refreshToken: string;
  /** Epoch milliseconds when the access token expires (by the client's clock at login). */
  expiresAt: number;
}

export interface YibaoClientOptions {
  /** Kept for callers that build URLs from it (downloads, the WebSocket); the transport has its own. */
  baseUrl?: string;
  transport: Transport;
  storage: Storage;
  graphqlPath?: string;
  timeoutMs?: number;
  /** Retries after the first attempt, for calls that are safe to repeat. */
  retries?: number;
  backoffMs?: number;
  /** Refresh this long before the access token expires. */
  refreshMarginMs?: number;
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  /** Secure random bytes, sync or async; default crypto.getRandomValues, else wx.getRandomValues. */
  randomBytes?: RandomBytes;
  storageKey?: string;
  /** Runs a refresh holding a lock that every client on the same storage shares (the page's other
   * tabs): default `navigator.locks` where there is one (browsers), else none (a mini-program has one
   * page process). Without it two tabs refresh with the same refresh token, and the server, seeing it
   * reused, ends the login on every device. */
  lock?: <R>(name: string, run: () => Promise<R>) => Promise<R>;
}

export interface CallOptions {
  /** Safe to send again after a network failure (default: true for queries, false for mutations). */
  idempotent?: boolean;
  operationName?: string;
  /** Send without the bearer token (login, refresh). */
  anonymous?: boolean;
}

export interface GraphQLResponse<D = unknown> {
  data?: D | null;
  errors?: GraphQLErrorShape[];
}

const SESSION_KEY = "yibao.session";

/** Synchronous crypto.getRandomValues (browsers, Node); kept for callers of earlier versions. */
export const defaultRandomBytes = syncRandomBytes;
// Earlier versions had uuid4 here (the H5 imports it from this module).
export { uuid4 } from "./random.js";

interface LockManagerLike {
  request<R>(name: string, callback: () => Promise<R>): Promise<R>;
}

function defaultLock(): <R>(name: string, run: () => Promise<R>) => Promise<R> {
  const locks = (globalThis as { navigator?: { locks?: LockManagerLike } }).navigator?.locks;
  if (locks && typeof locks.request === "function") return (name, run) => locks.request(name, run);
  return (_name, run) => run();
}

function isRetryableStatus(status: number): boolean {
  return status === 429 || status === 502 || status === 503 || status === 504;
}

export class YibaoClient {
  readonly baseUrl: string;
  readonly transport: Transport;
  readonly storage: Storage;
  private readonly graphqlPath: string;
  private readonly timeoutMs: number;
  private readonly retries: number;
  private readonly backoffMs: number;
  private readonly refreshMarginMs: number;
  private readonly now: () => number;
  private readonly sleep: (ms: number) => Promise<void>;
  /** Where client-made ids come from (see YibaoClientOptions.randomBytes). */
  readonly random: RandomSource;
  private readonly storageKey: string;
  private readonly lock: <R>(name: string, run: () => Promise<R>) => Promise<R>;
  private refreshing: Promise<Session> | null = null;
  private listeners = new Set<(session: Session | null) => void>();
  /** How many refreshes were sent (for tests and diagnostics). */
  refreshCount = 0;

  constructor(options: YibaoClientOptions) {
    this.baseUrl = options.baseUrl ?? "";
    this.transport = options.transport;
    this.storage = options.storage;
    this.graphqlPath = options.graphqlPath ?? "/graphql";
    this.timeoutMs = options.timeoutMs ?? 15_000;
    this.retries = options.retries ?? 3;
    this.backoffMs = options.backoffMs ?? 500;
    this.refreshMarginMs = options.refreshMarginMs ?? 30_000;
    this.now = options.now ?? (() => Date.now());
    this.sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.random = randomSource(options.randomBytes);
    this.storageKey = options.storageKey ?? SESSION_KEY;
    this.lock = options.lock ?? defaultLock();
  }

  // ---- session -------------------------------------------------------------------------------

  async session(): Promise<Session | null> {
    const raw = await this.storage.get(this.storageKey);
    if (!raw) return null;
    try {
      const parsed = JSON.parse(raw) as Session;
      return parsed.accessToken && parsed.refreshToken ? parsed : null;
    } catch {
      return null;
    }
  }

  async isLoggedIn(): Promise<boolean> {
    return (await this.session()) !== null;
  }

  /** Called with the new session after login and refresh, and with null when it ends. */
  onSessionChange(listener: (session: Session | null) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private async saveSession(payload: T.AuthPayload): Promise<Session> {
    const session: Session = {
      accessToken: payload.accessToken,
      refreshToken: payload.refreshToken,
      expiresAt: this.now() + payload.expiresIn * 1000,
    };
    await this.storage.set(this.storageKey, JSON.stringify(session));
    for (const listener of this.listeners) listener(session);
    return session;
  }

  private async clearSession(): Promise<void> {
    await this.storage.remove(this.storageKey);
    for (const listener of this.listeners) listener(null);
  }

  /** Log in with an identity provider's one-time code (`demo` with a demo login name, or `wechat`). */
  async login(code: string, provider = "demo"): Promise<Session> {
    const data = await this.call<{ login: T.AuthPayload }>("Login", { provider, code }, { anonymous: true, idempotent: false });
    return this.saveSession(data.login);
  }

  /** End the login on the server (every device) and forget it here; offline it is only forgotten here. */
  async logout(): Promise<void> {
    const session = await this.session();
    await this.clearSession();
    if (!session) return;
    try {
      await this.call("Logout", { refreshToken: session.refreshToken }, { anonymous: true, idempotent: true });
    } catch (error) {
      if (!(error instanceof NetworkError) && !(error instanceof YibaoError)) throw error;
    }
  }

  /** A valid access token, refreshed first when it is about to expire. */
  async accessToken(): Promise<string> {
    const session = await this.session();
    if (!session) throw new ReloginRequired();
    if (this.now() < session.expiresAt - this.refreshMarginMs) return session.accessToken;
    return (await this.refresh(session.accessToken)).accessToken;
  }

  /** Refreshes the session, once for all concurrent callers (of this client, and under `lock` of
   * every client on this storage). `staleToken` is the access token the caller
   * found wanting: when the stored one differs, another caller refreshed already and it is returned. */
  refresh(staleToken?: string): Promise<Session> {
    if (this.refreshing) return this.refreshing;
    // The session is read again under the lock: another tab may have refreshed meanwhile.
    const run = this.lock(`${this.storageKey}.refresh`, async (): Promise<Session> => {
      const session = await this.session();
      if (!session) throw new ReloginRequired();
      if (staleToken !== undefined && session.accessToken !== staleToken && this.now() < session.expiresAt - this.refreshMarginMs) {
        return session;
      }
      this.refreshCount += 1;
      let data: { refreshToken: T.AuthPayload };
      try {
        // Safe to repeat after a network failure (the server's grace window for the token it has just
        // rotated), and needed on a weak network: without it a lost answer leaves a dead token here.
        data = await this.call("RefreshToken", { refreshToken: session.refreshToken }, { anonymous: true, idempotent: true });
      } catch (error) {
        if (error instanceof YibaoError && error.code === "UNAUTHENTICATED") {
          await this.clearSession();
          throw new ReloginRequired(error);
        }
        throw error;
      }
      return this.saveSession(data.refreshToken);
    });
    this.refreshing = run;
    const clear = () => {
      if (this.refreshing === run) this.refreshing = null;
    };
    run.then(clear, clear);
    return run;
  }

  // ---- GraphQL -------------------------------------------------------------------------------

  /** One of the operations in graphql/operations/, by name. */
  call<D>(name: OperationName, variables: Record<string, unknown> = {}, options: CallOptions = {}): Promise<D> {
    const operation = OPERATIONS[name];
    return this.query<D>(operation.document, variables, {
      ...options,
      operationName: name,
      idempotent: options.idempotent ?? operation.kind === "query",
    });
  }

  /** Any GraphQL document; throws YibaoError for a response with errors. */
  async query<D>(document: string, variables: Record<string, unknown> = {}, options: CallOptions = {}): Promise<D> {
    const body = JSON.stringify({ query: document, variables, ...(options.operationName ? { operationName: options.operationName } : {}) });
    const idempotent = options.idempotent ?? !/^\s*mutation\b/.test(document);
    const response = await this.execute<D>(body, { idempotent, anonymous: options.anonymous ?? false });
    if (response.errors?.length) throw YibaoError.fromGraphQL(response.errors);
    return response.data as D;
  }

  /** Sends a GraphQL request body with the session's token, refreshing it (once) when the server says
   * UNAUTHENTICATED, and retrying network failures when `idempotent`. Returns the response as is. */
  async execute<D = unknown>(body: string, { idempotent, anonymous = false }: { idempotent: boolean; anonymous?: boolean }): Promise<GraphQLResponse<D>> {
    let token = anonymous ? null : await this.accessToken();
    let refreshed = false;
    for (;;) {
      const response = await this.send<D>(body, token, idempotent);
      const unauthenticated = response.errors?.some((e) => e.extensions?.code === "UNAUTHENTICATED");
      if (!unauthenticated || token === null) return response;
      if (refreshed) {
        // A fresh token refused at once: the login itself is over (revoked, logged out elsewhere).
        await this.clearSession();
        throw new ReloginRequired(YibaoError.fromGraphQL(response.errors!));
      }
      token = (await this.refresh(token)).accessToken;
      refreshed = true;
    }
  }

  private async send<D>(body: string, token: string | null, idempotent: boolean): Promise<GraphQLResponse<D>> {
    const headers: Record<string, string> = { "content-type": "application/json", accept: "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    const attempts = idempotent ? this.retries + 1 : 1;
    for (let attempt = 1; ; attempt++) {
      let failure: Error;
      try {
        const response = await this.transport.request({ url: this.graphqlPath, method: "POST", headers, body, timeoutMs: this.timeoutMs });
        let parsed: GraphQLResponse<D> | null = null;
        try {
          parsed = JSON.parse(response.body) as GraphQLResponse<D>;
        } catch {
          parsed = null;
        }
        if (parsed && typeof parsed === "object" && ("data" in parsed || "errors" in parsed)) {
          // Overload answered as a GraphQL error is still worth another try for a repeatable call.
          const busy = isRetryableStatus(response.status) && !parsed.data;
          if (!busy) return parsed;
          failure = new BadResponse(response.status, parsed.errors?.[0]?.message ?? `HTTP ${response.status}`);
        } else {
          failure = new BadResponse(response.status, `HTTP ${response.status}: not a GraphQL response`);
          if (!isRetryableStatus(response.status)) throw failure;
        }
      } catch (error) {
        if (!(error instanceof NetworkError) && !(error instanceof BadResponse)) throw error;
        if (error instanceof BadResponse && !isRetryableStatus(error.status)) throw error;
        failure = error;
      }
      if (attempt >= attempts) throw failure;
      await this.sleep(Math.min(this.backoffMs * 2 ** (attempt - 1), 8_000));
    }
  }

  // ---- typed calls (graphql/operations/) -----------------------------------------------------

  async me(): Promise<T.Me> {
    return (await this.call<{ me: T.Me }>("Me")).me;
  }

  async settlements(page: { first?: number; after?: string | null } = {}): Promise<T.Connection<T.Settlement>> {
    return (await this.call<{ me: { settlements: T.Connection<T.Settlement> } }>("MySettlements", page)).me.settlements;
  }

  async contributions(page: { first?: number; after?: string | null } = {}): Promise<T.Connection<T.Contribution>> {
    return (await this.call<{ me: { contributions: T.Connection<T.Contribution> } }>("MyContributions", page)).me.contributions;
  }

  async accountFlows(page: { first?: number; after?: string | null } = {}): Promise<T.Connection<T.AccountFlow>> {
    return (await this.call<{ me: { accountFlows: T.Connection<T.AccountFlow> } }>("MyAccountFlows", page)).me.accountFlows;
  }

  async relative(linkId: string, first = 20): Promise<T.RelativeRecords> {
    return (await this.call<{ relative: T.RelativeRecords }>("Relative", { linkId, first })).relative;
  }

  /** A fresh online code; repeating it only makes another code, so it is retried. */
  async issueVoucher(linkId: string | null = null): Promise<T.Voucher> {
    return (await this.call<{ issueVoucher: T.Voucher }>("IssueVoucher", { linkId }, { idempotent: true })).issueVoucher;
  }

  /** Certifies a device public key (unpadded base64url of 32 bytes). A repeat certifies the same key again. */
  async certifyDevice(publicKey: string, linkId: string | null = null): Promise<T.DeviceCertificateInfo> {
    return (await this.call<{ certifyDevice: T.DeviceCertificateInfo }>("CertifyDevice", { publicKey, linkId }, { idempotent: true })).certifyDevice;
  }

  async familyLinks(includeClosed = false): Promise<T.FamilyLink[]> {
    return (await this.call<{ familyLinks: T.FamilyLink[] }>("FamilyLinks", { includeClosed })).familyLinks;
  }

  /** Not retried: a repeat would replace the pending request by a new one. */
  async requestFamilyLink(input: T.RequestFamilyLinkInput): Promise<T.FamilyLink> {
    return (await this.call<{ requestFamilyLink: T.FamilyLink }>("RequestFamilyLink", { input })).requestFamilyLink;
  }

  async respondFamilyLink(id: string, accept: boolean, permissions: T.LinkPermission[] | null = null): Promise<T.FamilyLink> {
    return (await this.call<{ respondFamilyLink: T.FamilyLink }>("RespondFamilyLink", { id, accept, permissions })).respondFamilyLink;
  }

  /** Ends the link (either side, active or pending) at once. The server answers a repeat with the
   * closed link as it is, so it is retried. */
  async unlinkFamily(linkId: string): Promise<T.FamilyLink> {
    return (await this.call<{ unlinkFamily: T.FamilyLink }>("UnlinkFamily", { linkId }, { idempotent: true })).unlinkFamily;
  }

  async filingKinds(): Promise<T.FilingKind[]> {
    return (await this.call<{ filingKinds: T.FilingKind[] }>("FilingKinds")).filingKinds;
  }

  async myFilings(
    options: { first?: number; after?: string | null; linkId?: string | null; status?: T.FilingStatus | null } = {},
  ): Promise<T.Connection<T.Filing>> {
    return (await this.call<{ myFilings: T.Connection<T.Filing> }>("MyFilings", options)).myFilings;
  }

  async filing(id: string): Promise<T.Filing> {
    return (await this.call<{ filing: T.Filing }>("Filing", { id })).filing;
  }

  /** Idempotent on clientId (made here when not given), so a timeout is retried without a second filing. */
  async createFiling(input: T.CreateFilingInput): Promise<T.Filing> {
    const full = { ...input, clientId: input.clientId ?? (await randomUuid(this.random)) };
    return (await this.call<{ createFiling: T.Filing }>("CreateFiling", { input: full }, { idempotent: true })).createFiling;
  }

  /** The server answers a repeated submission with the filing as it is, so it is retried. */
  async submitFiling(id: string, changes: Record<string, unknown> | null = null): Promise<T.Filing> {
    return (await this.call<{ submitFiling: T.Filing }>("SubmitFiling", { id, changes }, { idempotent: true })).submitFiling;
  }

  async notifications(
    options: { first?: number; after?: string | null; unreadOnly?: boolean } = {},
  ): Promise<{ notifications: T.Connection<T.Notification>; unreadNotificationCount: number }> {
    return this.call("Notifications", options);
  }

  async markNotificationsRead(ids: string[] | null = null): Promise<{ markedCount: number; unreadCount: number }> {
    return (await this.call<{ markNotificationsRead: { markedCount: number; unreadCount: number } }>("MarkNotificationsRead", { ids }, { idempotent: true }))
      .markNotificationsRead;
  }
}
