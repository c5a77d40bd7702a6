// Key-value storage for the session, the device key and the certificate: the phone's storage
// (wx.setStorageSync), the browser's localStorage, or memory (tests, Node). Values are strings.

export interface Storage {
  get(key: string): string | null | Promise<string | null>;
  set(key: string, value: string): void | Promise<void>;
  remove(key: string): void | Promise<void>;
  /** Every key held (the SDK's and anyone else's on the same storage): what forgetting by prefix needs.
   * The SDK's adapters all have it; without it only the keys whose names are fixed can be forgotten. */
  keys?(): string[] | Promise<string[]>;
}

interface LocalStorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
  readonly length: number;
  key(index: number): string | null;
}

export function localStorageAdapter(storage?: LocalStorageLike): Storage {
  const target = (): LocalStorageLike => storage ?? (globalThis as unknown as { localStorage: LocalStorageLike }).localStorage;
  return {
    get: (key) => target().getItem(key),
    set: (key, value) => target().setItem(key, value),
    remove: (key) => target().removeItem(key),
    keys: () => {
      const store = target();
      return Array.from({ length: store.length }, (_, index) => store.key(index)).filter((key): key is string => key !== null);
    },
  };
}

export interface WxStorageLike {
  getStorageSync(key: string): unknown;
  setStorageSync(key: string, value: unknown): void;
  removeStorageSync(key: string): void;
  /** wx.getStorageInfoSync: `keys` lists what the mini-program has stored. */
  getStorageInfoSync?(): { keys: string[] };
}

/** wx's storage answers "" for a key it does not have. */
export function wxStorageAdapter(wx: WxStorageLike): Storage {
  const adapter: Storage = {
    get(key) {
      const value = wx.getStorageSync(key);
      return typeof value === "string" && value !== "" ? value : null;
    },
    set: (key, value) => wx.setStorageSync(key, value),
    remove: (key) => wx.removeStorageSync(key),
  };
  if (typeof wx.getStorageInfoSync === "function") adapter.keys = () => [...wx.getStorageInfoSync!().keys];
  return adapter;
}

export function memoryStorage(initial: Record<string, string> = {}): Storage & { data: Map<string, string> } {
  const data = new Map(Object.entries(initial));
  return {
    data,
    get: (key) => data.get(key) ?? null,
    set: (key, value) => {
      data.set(key, value);
    },
    remove: (key) => {
      data.delete(key);
    },
    keys: () => [...data.keys()],
  };
}

/** Removes every key that starts with `prefix`; returns them. Empty without `storage.keys`. */
export async function removeByPrefix(storage: Storage, prefix: string): Promise<string[]> {
  const keys = storage.keys ? (await storage.keys()).filter((key) => key.startsWith(prefix)) : [];
  for (const key of keys) await storage.remove(key);
  return keys;
}

/** Where OfflineVoucher keeps a person's device key, certificates and counter when one storage serves
 * several people (a shared phone): its `keyPrefix`. */
export function personVoucherPrefix(personId: string): string {
  return `yibao.voucher.${personId}`;
}

/** The offline voucher's keys under `prefix` whose names are fixed (the certificates for relatives'
 * links are named by link id, found only by listing). */
export function voucherFixedKeys(prefix: string): string[] {
  return [`${prefix}.device-key`, `${prefix}.counter`, `${prefix}.certificate.self`];
}

/** Forgets what the SDK keeps of one person on this storage (a logout on a shared phone): the offline
 * voucher's device key, every certificate (their own and their relatives') and the counter, under
 * personVoucherPrefix(personId). The login itself (the client's session, its tokens) is one per client,
 * not per person: YibaoClient.logout removes it. Without `storage.keys` the device key, counter and own
 * certificate still go, and a relative's certificate left behind composes no code without the key. */
export async function forgetPerson(storage: Storage, personId: string): Promise<void> {
  await forgetVoucherKeys(storage, personVoucherPrefix(personId));
}

/** Removes an offline voucher's keys under `prefix` (its keyPrefix): OfflineVoucher.forgetAll. */
export async function forgetVoucherKeys(storage: Storage, prefix: string): Promise<void> {
  for (const key of voucherFixedKeys(prefix)) await storage.remove(key);
  await removeByPrefix(storage, `${prefix}.`);
}
