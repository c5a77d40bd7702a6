// Key-value storage for the session, the device key and the certificate: the phone's storage
// (wx.setStorageSync), the browser's localStorage, or memory (tests, Node). Values are strings.

export interface Storage {
  get(key: string): string | null | Promise<string | null>;
  set(key: string, value: string): void | Promise<void>;
  remove(key: string): void | Promise<void>;
}

interface LocalStorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

export function localStorageAdapter(storage?: LocalStorageLike): Storage {
  const target = (): LocalStorageLike => storage ?? (globalThis as unknown as { localStorage: LocalStorageLike }).localStorage;
  return {
    get: (key) => target().getItem(key),
    set: (key, value) => target().setItem(key, value),
    remove: (key) => target().removeItem(key),
  };
}

export interface WxStorageLike {
  getStorageSync(key: string): unknown;
  setStorageSync(key: string, value: unknown): void;
  removeStorageSync(key: string): void;
}

/** wx's storage answers "" for a key it does not have. */
export function wxStorageAdapter(wx: WxStorageLike): Storage {
  return {
    get(key) {
      const value = wx.getStorageSync(key);
      return typeof value === "string" && value !== "" ? value : null;
    },
    set: (key, value) => wx.setStorageSync(key, value),
    remove: (key) => wx.removeStorageSync(key),
  };
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
  };
}
