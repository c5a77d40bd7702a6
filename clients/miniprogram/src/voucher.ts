// The offline voucher (离线医保码), sync/vouchers/SPEC.md: the phone keeps an Ed25519 device key in its
// storage, has the server certify the public key once (certifyDevice), and then composes codes without
// signal: certificate || time || counter, signed by the device key, as `YBD:` + Base45. The certificate
// carries its own validity, so the phone knows offline when it has run out and says so (the page shows
// 离线码已过期 instead of a dead code). Byte-for-byte equal to sync/vouchers/test_vectors.json
// (clients/miniprogram/test/voucher.test.mjs checks every vector).

import { ed25519 } from "@noble/curves/ed25519.js";

import type { YibaoClient } from "./client.js";
import { YibaoError } from "./errors.js";
import { type RandomBytes, type RandomSource, randomSource } from "./random.js";
import type { Storage } from "./storage.js";
import type { DeviceCertificateInfo } from "./types.js";

export const OFFLINE_PREFIX = "YBD:";
export const ONLINE_PREFIX = "YBS:";
export const OFFLINE_LIFETIME_S = 60;
export const MAX_COUNTER = 0xffff;
const CERT_TYPE = 0x02;
const FLAG_LINK = 0x01;
const CTX_OFFLINE = asciiZ("yibao/voucher/v1/offline");

function asciiZ(text: string): Uint8Array {
  const out = new Uint8Array(text.length + 1);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
  return out;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function fromHex(hex: string): Uint8Array {
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(hex)) throw new Error("not hex");
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

// ---- Base45 (RFC 9285) and base64 without Buffer or atob (neither exists in every mini-program) ----

const B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:";

export function base45Encode(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    let n = bytes[i]! * 256 + bytes[i + 1]!;
    const c = n % 45;
    n = (n - c) / 45;
    const d = n % 45;
    const e = (n - d) / 45;
    out += B45[c]! + B45[d]! + B45[e]!;
  }
  if (bytes.length % 2) {
    const n = bytes[bytes.length - 1]!;
    out += B45[n % 45]! + B45[Math.floor(n / 45)]!;
  }
  return out;
}

export function base45Decode(text: string): Uint8Array {
  if (text.length % 3 === 1) throw new Error("invalid Base45 length");
  const values = Array.from(text, (ch) => {
    const v = B45.indexOf(ch);
    if (v < 0) throw new Error("invalid Base45 character");
    return v;
  });
  const out: number[] = [];
  for (let i = 0; i < values.length; i += 3) {
    if (i + 2 < values.length) {
      const n = values[i]! + values[i + 1]! * 45 + values[i + 2]! * 2025;
      if (n > 0xffff) throw new Error("invalid Base45 triple");
      out.push(n >> 8, n & 0xff);
    } else {
      const n = values[i]! + values[i + 1]! * 45;
      if (n > 0xff) throw new Error("invalid Base45 pair");
      out.push(n);
    }
  }
  return Uint8Array.from(out);
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

export function base64Encode(bytes: Uint8Array, { url = false } = {}): string {
  let out = "";
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    const chars = [B64[(n >> 18) & 63], B64[(n >> 12) & 63], B64[(n >> 6) & 63], B64[n & 63]];
    const keep = Math.min(4, bytes.length - i + 1);
    out += chars.slice(0, keep).join("") + (url ? "" : "=".repeat(4 - keep));
  }
  return url ? out.replace(/\+/g, "-").replace(/\//g, "_") : out;
}

export function base64Decode(text: string): Uint8Array {
  const clean = text.replace(/-/g, "+").replace(/_/g, "/").replace(/=+$/, "");
  const out: number[] = [];
  let buffer = 0;
  let bits = 0;
  for (const ch of clean) {
    const v = B64.indexOf(ch);
    if (v < 0) throw new Error("invalid base64");
    buffer = (buffer << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push((buffer >> bits) & 0xff);
    }
  }
  return Uint8Array.from(out);
}

// ---- the device certificate (SPEC.md section 4) and the offline code (section 5) ----------------

export interface DeviceCertificate {
  raw: Uint8Array;
  flags: number;
  kid: string;
  serial: string;
  devicePublicKey: Uint8Array;
  personRef: string;
  linkRef: string | null;
  /** Unix seconds. */
  notBefore: number;
  notAfter: number;
}

const readU32 = (b: Uint8Array, at: number) => ((b[at]! << 24) >>> 0) + (b[at + 1]! << 16) + (b[at + 2]! << 8) + b[at + 3]!;

export function parseDeviceCertificate(raw: Uint8Array): DeviceCertificate {
  if (raw.length < 2 || raw[0] !== CERT_TYPE) throw new Error("not a device certificate (type byte)");
  const flags = raw[1]!;
  if (flags & ~FLAG_LINK) throw new Error("not a device certificate (reserved flag set)");
  const m = flags & FLAG_LINK ? 62 : 54;
  if (raw.length !== m + 6 + 64) throw new Error("not a device certificate (length)");
  const notBefore = readU32(raw, m);
  const validityMin = (raw[m + 4]! << 8) + raw[m + 5]!;
  return {
    raw,
    flags,
    kid: toHex(raw.slice(2, 6)),
    serial: toHex(raw.slice(6, 14)),
    devicePublicKey: raw.slice(14, 46),
    personRef: toHex(raw.slice(46, 54)),
    linkRef: flags & FLAG_LINK ? toHex(raw.slice(54, 62)) : null,
    notBefore,
    notAfter: notBefore + 60 * validityMin,
  };
}

function u32(value: number): Uint8Array {
  return Uint8Array.of((value >>> 24) & 0xff, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff);
}

/** certificate || time || counter signed with `deviceSecretKey`, whatever key the certificate names
 * (the test vectors include such a forgery; the phone always goes through composeOfflineCode). */
export function signOfflineCode(certificate: Uint8Array, deviceSecretKey: Uint8Array, time: number, counter: number): string {
  parseDeviceCertificate(certificate);
  if (!Number.isInteger(counter) || counter < 0 || counter > MAX_COUNTER) throw new Error(`counter must be within 0..${MAX_COUNTER}`);
  if (!Number.isInteger(time) || time < 0 || time > 0xffffffff) throw new Error("time must be Unix seconds (uint32)");
  const signed = concat(certificate, u32(time), Uint8Array.of(counter >> 8, counter & 0xff));
  const signature = ed25519.sign(concat(CTX_OFFLINE, signed), deviceSecretKey);
  return OFFLINE_PREFIX + base45Encode(concat(signed, signature));
}

/** What the phone does without signal (sync/vouchers/issue.py compose_offline_code): the device key must be
 * the certificate's. `now` is Unix seconds or a Date. */
export function composeOfflineCode(certificate: Uint8Array, deviceSecretKey: Uint8Array, now: number | Date, counter: number): string {
  const cert = parseDeviceCertificate(certificate);
  if (toHex(ed25519.getPublicKey(deviceSecretKey)) !== toHex(cert.devicePublicKey)) {
    throw new Error("the device key does not match the certificate");
  }
  const time = now instanceof Date ? Math.floor(now.getTime() / 1000) : now;
  return signOfflineCode(certificate, deviceSecretKey, time, counter);
}

// ---- the phone's side: key and certificates in storage --------------------------------------------

export type CertificateState = "none" | "valid" | "not_yet_valid" | "expired" | "revoked";

export interface CertificateStatus {
  state: CertificateState;
  certificate: DeviceCertificate | null;
  /** Milliseconds since the epoch, when there is a certificate. */
  notAfter: number | null;
  /** zh-CN, for the page. */
  message: string;
}

export interface OfflineCode {
  code: string;
  /** Milliseconds since the epoch: time + 60 s. */
  expiresAt: number;
  counter: number;
  certificateNotAfter: number;
}

/** The certificate has run out (or is not yet valid, or revoked): no code is composed. */
export class OfflineCodeUnavailable extends YibaoError {
  readonly state: CertificateState;
  constructor(state: CertificateState, message: string) {
    super("OFFLINE_CODE_UNAVAILABLE", message);
    this.name = "OfflineCodeUnavailable";
    this.state = state;
  }
}

const MESSAGES: Record<CertificateState, string> = {
  none: "尚未开通离线码，请联网后开通",
  valid: "离线码可用",
  not_yet_valid: "离线码尚未生效，请检查手机时间",
  expired: "离线码已过期，请联网后刷新",
  revoked: "离线码已停用，请联网后重新开通",
};

export interface OfflineVoucherOptions {
  client: Pick<YibaoClient, "certifyDevice">;
  storage: Storage;
  now?: () => number;
  /** Secure random bytes, sync or async; default crypto.getRandomValues, else wx.getRandomValues. */
  randomBytes?: RandomBytes;
  /** Certify again (when online) this long before the certificate runs out. */
  renewBeforeMs?: number;
  keyPrefix?: string;
}

interface StoredCertificate extends Omit<DeviceCertificateInfo, "certificate"> {
  certificate: string;
}

export class OfflineVoucher {
  private readonly client: Pick<YibaoClient, "certifyDevice">;
  private readonly storage: Storage;
  private readonly now: () => number;
  private readonly random: RandomSource;
  private readonly renewBeforeMs: number;
  private readonly prefix: string;

  constructor(options: OfflineVoucherOptions) {
    this.client = options.client;
    this.storage = options.storage;
    this.now = options.now ?? (() => Date.now());
    this.random = randomSource(options.randomBytes);
    this.renewBeforeMs = options.renewBeforeMs ?? 3 * 24 * 3600 * 1000;
    this.prefix = options.keyPrefix ?? "yibao.voucher";
  }

  private certKey(linkId: string | null): string {
    return `${this.prefix}.certificate.${linkId ?? "self"}`;
  }

  /** The device's secret key (a 32-byte Ed25519 seed), made once and kept in storage. */
  async deviceSecretKey(): Promise<Uint8Array> {
    const key = `${this.prefix}.device-key`;
    const stored = await this.storage.get(key);
    if (stored) return base64Decode(stored);
    // An Ed25519 secret key is 32 random bytes (what ed25519.utils.randomSecretKey makes, from a
    // crypto.getRandomValues that a mini-program does not have).
    const seed = await this.random(32);
    // Asked again right before writing: two first uses at once (two certifications, another instance
    // on the same storage) must not each keep a key of their own, or the certificate stored names a key
    // the phone no longer has and no offline code can be composed. With synchronous storage
    // (localStorage, wx) nothing runs between this read and the write (no await between them).
    const pending = this.storage.get(key);
    const again = pending instanceof Promise ? await pending : pending;
    if (again) return base64Decode(again);
    await this.storage.set(key, base64Encode(seed, { url: true }));
    return seed;
  }

  /** Unpadded base64url of the raw public key, as certifyDevice takes it. */
  async publicKey(): Promise<string> {
    return base64Encode(ed25519.getPublicKey(await this.deviceSecretKey()), { url: true });
  }

  /** Online: has the server certify this device's key (for me, or a relative through linkId). */
  async certify(linkId: string | null = null): Promise<DeviceCertificate> {
    const info = await this.client.certifyDevice(await this.publicKey(), linkId);
    const cert = parseDeviceCertificate(base64Decode(info.certificate));
    if (toHex(cert.devicePublicKey) !== toHex(ed25519.getPublicKey(await this.deviceSecretKey()))) {
      throw new Error("the server certified another key");
    }
    await this.storage.set(this.certKey(linkId), JSON.stringify(info satisfies StoredCertificate));
    return cert;
  }

  /** Online: certifies when there is no certificate or it runs out within renewBeforeMs. */
  async ensureCertified(linkId: string | null = null): Promise<CertificateStatus> {
    const status = await this.status(linkId);
    if (status.state !== "valid" || status.notAfter! - this.now() < this.renewBeforeMs) await this.certify(linkId);
    return this.status(linkId);
  }

  /** Removes one certificate (mine with null, else the link's): no code of it is composed here any more. */
  async forget(linkId: string | null = null): Promise<void> {
    await this.storage.remove(this.certKey(linkId));
  }

  /** Removes everything this voucher keeps: the device key, every certificate, the counter (a logout
   * on a shared phone; for another person's voucher without making one: forgetPerson in storage.ts). */
  async forgetAll(): Promise<void> {
    // As storage.ts's forgetVoucherKeys, which is not imported: the H5 loads this module as a chunk of
    // its own, and sharing storage.ts with its first load would split that into one more file.
    const fixed = [`${this.prefix}.device-key`, `${this.prefix}.counter`, this.certKey(null)];
    const listed = this.storage.keys ? (await this.storage.keys()).filter((key) => key.startsWith(`${this.prefix}.`)) : [];
    for (const key of new Set([...fixed, ...listed])) await this.storage.remove(key);
  }

  /** The links whose certificate this phone holds (not my own); empty without `storage.keys`. */
  async certifiedLinks(): Promise<string[]> {
    if (!this.storage.keys) return [];
    const prefix = `${this.prefix}.certificate.`;
    return (await this.storage.keys())
      .filter((key) => key.startsWith(prefix))
      .map((key) => key.slice(prefix.length))
      .filter((linkId) => linkId !== "self");
  }

  /** What the stored certificate allows now, known without signal. */
  async status(linkId: string | null = null): Promise<CertificateStatus> {
    const raw = await this.storage.get(this.certKey(linkId));
    if (!raw) return { state: "none", certificate: null, notAfter: null, message: MESSAGES.none };
    const info = JSON.parse(raw) as StoredCertificate;
    const cert = parseDeviceCertificate(base64Decode(info.certificate));
    const nowS = Math.floor(this.now() / 1000);
    const state: CertificateState = info.revokedAt ? "revoked" : nowS < cert.notBefore ? "not_yet_valid" : nowS > cert.notAfter ? "expired" : "valid";
    return { state, certificate: cert, notAfter: cert.notAfter * 1000, message: MESSAGES[state] };
  }

  /** An offline code for now; OfflineCodeUnavailable when the certificate does not cover now. */
  async code(linkId: string | null = null): Promise<OfflineCode> {
    const status = await this.status(linkId);
    if (status.state !== "valid") throw new OfflineCodeUnavailable(status.state, status.message);
    const cert = status.certificate!;
    const counterKey = `${this.prefix}.counter`;
    const counter = (Number((await this.storage.get(counterKey)) ?? "0") + 1) % (MAX_COUNTER + 1);
    await this.storage.set(counterKey, String(counter));
    const time = Math.floor(this.now() / 1000);
    // The code must not outlive its certificate's promise either: verifiers check both.
    const code = composeOfflineCode(cert.raw, await this.deviceSecretKey(), time, counter);
    return { code, expiresAt: (time + OFFLINE_LIFETIME_S) * 1000, counter, certificateNotAfter: cert.notAfter * 1000 };
  }
}
