// The SDK in a WeChat mini-program: no `crypto` global, only the asynchronous wx.getRandomValues. This
// file removes Node's crypto global before the SDK (and @noble/curves inside it) is loaded; node's test
// runner gives each test file a process of its own, so the other files keep theirs.
import assert from "node:assert/strict";
import { createPublicKey, randomBytes as nodeRandomBytes, sign as nodeSign, verify as nodeVerify, createPrivateKey } from "node:crypto";
import { readFileSync } from "node:fs";
import { test } from "node:test";

delete globalThis.crypto;
if (globalThis.crypto !== undefined) Object.defineProperty(globalThis, "crypto", { value: undefined, configurable: true, writable: true });
assert.equal(globalThis.crypto, undefined);

const sdk = await import("../dist/yibao-sdk.js");
const { NoSecureRandom, OfflineVoucher, YibaoClient, base45Decode, base64Decode, fromHex, memoryStorage, parseDeviceCertificate, randomSource, randomUuid, uuid4 } = sdk;
const { fakeBackend } = await import("./fake-backend.mjs");

const vectors = JSON.parse(readFileSync(new URL("../../../sync/vouchers/test_vectors.json", import.meta.url), "utf8"));
const UUID4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** wx.getRandomValues as WeChat documents it: an ArrayBuffer in `success`, later (never synchronously). */
function installWx({ fail = false } = {}) {
  const calls = [];
  globalThis.wx = {
    getRandomValues({ length, success, fail: failed }) {
      calls.push(length);
      setTimeout(() => (fail ? failed({ errMsg: "getRandomValues:fail system error" }) : success({ randomValues: new Uint8Array(nodeRandomBytes(length)).buffer })), 1);
    },
  };
  return calls;
}

// Ed25519 keys for node:crypto (OpenSSL), an implementation independent of the SDK's @noble/curves.
const PKCS8_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");
const SPKI_PREFIX = Buffer.from("302a300506032b6570032100", "hex");
const privateKey = (seed) => createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, Buffer.from(seed)]), format: "der", type: "pkcs8" });
const publicKey = (raw) => createPublicKey({ key: Buffer.concat([SPKI_PREFIX, Buffer.from(raw)]), format: "der", type: "spki" });
const ctx = (text) => Buffer.from(`${text}\0`, "ascii");
const CTX_CERT = ctx("yibao/voucher/v1/device-cert");
const CTX_OFFLINE = ctx("yibao/voucher/v1/offline");

/** certifyDevice as the server does it (sync/vouchers/issue.py issue_device_certificate, no link):
 * the vectors' issuer key certifies whatever public key the phone sends, for a day from `notBefore`. */
function certifyingClient(notBefore) {
  const issuer = vectors.keys.issuer;
  const certified = [];
  return {
    certified,
    async certifyDevice(devicePublicKey, linkId) {
      certified.push(devicePublicKey);
      const u32 = Buffer.alloc(4);
      u32.writeUInt32BE(notBefore);
      const signed = Buffer.concat([
        Buffer.of(0x02, 0x00),
        Buffer.from(issuer.kid, "hex"),
        Buffer.from("0102030405060708", "hex"), // serial
        Buffer.from(base64Decode(devicePublicKey)),
        Buffer.from("1112131415161718", "hex"), // person_ref
        u32,
        Buffer.of(0x05, 0xa0), // 1440 minutes
      ]);
      const certificate = Buffer.concat([signed, nodeSign(null, Buffer.concat([CTX_CERT, signed]), privateKey(fromHex(issuer.seed)))]);
      const cert = parseDeviceCertificate(new Uint8Array(certificate));
      return { certificate: certificate.toString("base64"), serial: cert.serial, kid: cert.kid, linkId, notBefore: "", notAfter: "", revokedAt: null };
    },
  };
}

test("without crypto, wx.getRandomValues makes the device key, and its offline code verifies", async () => {
  const calls = installWx();
  const nowS = 1_900_000_000;
  const client = certifyingClient(nowS - 60);
  const storage = memoryStorage();
  const voucher = new OfflineVoucher({ client, storage, now: () => nowS * 1000 });
  const cert = await voucher.certify();
  assert.deepEqual(calls, [32]); // the device key, once
  assert.equal(Buffer.from(cert.devicePublicKey).toString("base64url"), client.certified[0]);
  const { code, counter } = await voucher.code();
  assert.equal(counter, 1);
  assert.deepEqual(calls, [32]); // composing a code needs no randomness

  // The verifier's checks (sync/vouchers/verify.py), with OpenSSL: the issuer signed the certificate,
  // the certified device key signed the code, time and counter as composed.
  const payload = Buffer.from(base45Decode(code.slice("YBD:".length)));
  const certLength = 54 + 6 + 64;
  const certificate = payload.subarray(0, certLength);
  const signed = payload.subarray(0, certLength + 6);
  const signature = payload.subarray(certLength + 6);
  assert.equal(signature.length, 64);
  assert.ok(nodeVerify(null, Buffer.concat([CTX_CERT, certificate.subarray(0, 60)]), publicKey(fromHex(vectors.keys.issuer.public_key)), certificate.subarray(60)));
  assert.ok(nodeVerify(null, Buffer.concat([CTX_OFFLINE, signed]), publicKey(certificate.subarray(14, 46)), signature));
  assert.equal(payload.readUInt32BE(certLength), nowS);
  assert.equal(payload.readUInt16BE(certLength + 4), 1);

  // The key stays: another instance on the same storage asks for no new randomness.
  assert.equal(await new OfflineVoucher({ client, storage }).publicKey(), client.certified[0]);
  assert.deepEqual(calls, [32]);
});

test("without crypto, client-made ids come from wx.getRandomValues too", async () => {
  const calls = installWx();
  assert.match(await randomUuid(), UUID4);
  assert.deepEqual(calls, [16]);
  const backend = fakeBackend();
  const client = new YibaoClient({ transport: backend.transport, storage: memoryStorage(), sleep: async () => {} });
  await client.login("resident");
  const filing = await client.createFiling({ kind: "CROSS_REGION", fields: {} });
  assert.match(filing.clientId, UUID4);
  assert.deepEqual(calls, [16, 16]);
  // The synchronous uuid4 (browsers) says what to use instead.
  assert.throws(() => uuid4(), (error) => error instanceof NoSecureRandom && /randomUuid|async RandomSource/.test(error.message));
});

test("a failing wx.getRandomValues is reported, not papered over", async () => {
  installWx({ fail: true });
  const voucher = new OfflineVoucher({ client: certifyingClient(0), storage: memoryStorage() });
  await assert.rejects(voucher.publicKey(), /wx\.getRandomValues failed: getRandomValues:fail system error/);
});

test("an injected source (sync or async) is used as given, and its length is checked", async () => {
  installWx({ fail: true }); // not asked: the injected one wins
  const sync = randomSource((n) => new Uint8Array(n).fill(7));
  assert.deepEqual(await sync(3), Uint8Array.of(7, 7, 7));
  const seed = new Uint8Array(32).fill(9);
  const voucher = new OfflineVoucher({ client: certifyingClient(0), storage: memoryStorage(), randomBytes: async () => seed });
  const key = await voucher.deviceSecretKey();
  assert.deepEqual(key, seed);
  await assert.rejects(randomSource(() => new Uint8Array(5))(16), /gave 5 bytes where 16 were asked for/);
});

test("with neither crypto nor wx the error says so, and nothing is sent", async () => {
  delete globalThis.wx;
  const voucher = new OfflineVoucher({ client: certifyingClient(0), storage: memoryStorage() });
  const clear = (error) => error instanceof NoSecureRandom && /no secure random source: neither crypto\.getRandomValues nor wx\.getRandomValues/.test(error.message);
  await assert.rejects(voucher.publicKey(), clear);
  await assert.rejects(randomUuid(), clear);
  const backend = fakeBackend();
  const client = new YibaoClient({ transport: backend.transport, storage: memoryStorage(), sleep: async () => {} });
  await client.login("resident");
  await assert.rejects(client.createFiling({ kind: "CROSS_REGION", fields: {} }), clear);
  assert.equal(backend.state.calls.filter((c) => c.operationName === "CreateFiling").length, 0);
});
