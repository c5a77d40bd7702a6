// Secure random bytes wherever the SDK runs. A browser and Node have the synchronous
// `crypto.getRandomValues`; a WeChat mini-program has no `crypto` global, only the asynchronous
// `wx.getRandomValues({ length, success, fail })` (base library 2.15.0+). So everything that needs
// randomness (the offline voucher's device key, client-made UUIDs) awaits a RandomSource.

/** `length` secure random bytes; sync or async (a RandomSource awaits either). */
export type RandomBytes = (length: number) => Uint8Array | Promise<Uint8Array>;

/** `length` secure random bytes, always as a promise. */
export type RandomSource = (length: number) => Promise<Uint8Array>;

/** The part of the mini-program's `wx` object used here, as WeChat documents wx.getRandomValues. */
export interface WxRandomLike {
  getRandomValues(options: {
    length: number;
    success?: (result: { randomValues: ArrayBuffer }) => void;
    fail?: (error: { errMsg?: string }) => void;
  }): unknown;
}

/** Neither `crypto.getRandomValues` nor `wx.getRandomValues` exists and none was passed. */
export class NoSecureRandom extends Error {
  constructor(detail = "neither crypto.getRandomValues nor wx.getRandomValues (WeChat base library 2.15.0+) is available") {
    super(`no secure random source: ${detail}; pass randomBytes`);
    this.name = "NoSecureRandom";
  }
}

interface CryptoLike {
  getRandomValues(bytes: Uint8Array): Uint8Array;
}

declare const wx: WxRandomLike | undefined;

function globalCrypto(): CryptoLike | null {
  const crypto = (globalThis as { crypto?: Partial<CryptoLike> }).crypto;
  return typeof crypto?.getRandomValues === "function" ? (crypto as CryptoLike) : null;
}

function globalWx(): WxRandomLike | null {
  // In a mini-program `wx` is a global of the page's script, not always a property of globalThis.
  const found = typeof wx !== "undefined" ? wx : (globalThis as { wx?: WxRandomLike }).wx;
  return typeof found?.getRandomValues === "function" ? found : null;
}

function checked(bytes: Uint8Array, length: number, origin: string): Uint8Array {
  if (!(bytes instanceof Uint8Array) || bytes.length !== length) {
    throw new Error(`${origin} gave ${bytes?.length ?? "no"} bytes where ${length} were asked for`);
  }
  return bytes;
}

/** `length` bytes from `crypto.getRandomValues`, synchronously: browsers and Node only. */
export function syncRandomBytes(length: number): Uint8Array {
  const crypto = globalCrypto();
  if (!crypto) throw new NoSecureRandom("no synchronous crypto.getRandomValues here (a mini-program?): use an async RandomSource");
  const bytes = new Uint8Array(length);
  // getRandomValues fills at most 65536 bytes a call.
  for (let at = 0; at < length; at += 65536) crypto.getRandomValues(bytes.subarray(at, Math.min(length, at + 65536)));
  return bytes;
}

/** wx.getRandomValues, promisified. */
export function wxRandomSource(wxObject: WxRandomLike): RandomSource {
  return (length) =>
    new Promise<Uint8Array>((resolve, reject) => {
      try {
        wxObject.getRandomValues({
          length,
          success: ({ randomValues }) => {
            try {
              resolve(checked(new Uint8Array(randomValues), length, "wx.getRandomValues"));
            } catch (error) {
              reject(error);
            }
          },
          fail: (error) => reject(new Error(`wx.getRandomValues failed: ${error?.errMsg ?? "unknown error"}`)),
        });
      } catch (error) {
        reject(error);
      }
    });
}

/** The source to use: `injected` when given, else `crypto.getRandomValues` where it exists (browsers,
 * Node), else the mini-program's `wx.getRandomValues`. Looked up at each call, so a page that gets its
 * globals late still works, and a missing source fails only where randomness is needed. */
export function randomSource(injected?: RandomBytes): RandomSource {
  if (injected) return async (length) => checked(await injected(length), length, "randomBytes");
  return async (length) => {
    if (globalCrypto()) return syncRandomBytes(length);
    const wxObject = globalWx();
    if (wxObject) return wxRandomSource(wxObject)(length);
    throw new NoSecureRandom();
  };
}

function formatUuid(b: Uint8Array): string {
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A random (version 4) UUID from any RandomSource: what a mini-program uses. */
export async function randomUuid(source: RandomSource = randomSource()): Promise<string> {
  return formatUuid(await source(16));
}

/** A random (version 4) UUID, synchronously (browsers and Node; in a mini-program use randomUuid).
 * From getRandomValues, so that it works outside secure contexts too. */
export function uuid4(randomBytes: (length: number) => Uint8Array = syncRandomBytes): string {
  return formatUuid(checked(randomBytes(16), 16, "randomBytes"));
}
