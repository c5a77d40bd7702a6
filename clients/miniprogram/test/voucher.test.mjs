import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  OfflineCodeUnavailable,
  OfflineVoucher,
  base45Decode,
  base45Encode,
  base64Decode,
  base64Encode,
  composeOfflineCode,
  forgetPerson,
  fromHex,
  localStorageAdapter,
  memoryStorage,
  personVoucherPrefix,
  wxStorageAdapter,
  parseDeviceCertificate,
  signOfflineCode,
  toHex,
} from "../dist/yibao-sdk.js";

import { fakeWx } from "./fake-backend.mjs";

const vectors = JSON.parse(readFileSync(new URL("../../../sync/vouchers/test_vectors.json", import.meta.url), "utf8"));
const seed = (name) => fromHex(vectors.keys[name].seed);
const offline = vectors.issued.filter((entry) => entry.form === "offline");

test("the vectors file has offline codes to check", () => {
  assert.ok(offline.length >= 6, offline.length);
});

for (const entry of offline) {
  test(`test vector: ${entry.name}`, () => {
    const certificate = fromHex(entry.certificate_hex);
    const cert = parseDeviceCertificate(certificate);
    const issued = entry.issue_device_certificate;
    assert.equal(cert.serial, issued.serial);
    assert.equal(cert.personRef, issued.person_ref);
    assert.equal(cert.linkRef, issued.link_ref);
    assert.equal(cert.kid, issued.kid);
    assert.equal(cert.notBefore, issued.now);
    assert.equal(cert.notAfter, issued.now + issued.validity_s);
    const { device, now, counter } = entry.compose_offline_code;
    let code;
    if (device === issued.device) {
      code = composeOfflineCode(certificate, seed(device), now, counter);
      assert.equal(composeOfflineCode(certificate, seed(device), new Date(now * 1000), counter), code);
    } else {
      // The forgery: signed by a device that is not the certificate's, which composeOfflineCode refuses.
      assert.throws(() => composeOfflineCode(certificate, seed(device), now, counter), /does not match/);
      code = signOfflineCode(certificate, seed(device), now, counter);
    }
    assert.equal(code, entry.code);
    assert.equal(toHex(base45Decode(code.slice(4))), entry.payload_hex);
  });
}

test("Base45 round-trips every online and offline vector; strict decoding", () => {
  for (const entry of vectors.issued) {
    const payload = fromHex(entry.payload_hex);
    assert.equal(entry.code.slice(4), base45Encode(payload));
    assert.deepEqual(base45Decode(entry.code.slice(4)), payload);
  }
  assert.equal(base45Encode(new TextEncoder().encode("AB")), "BB8"); // RFC 9285 examples
  assert.equal(base45Encode(new TextEncoder().encode("Hello!!")), "%69 VD92EX0");
  assert.throws(() => base45Decode("GGW"), /triple/); // 65 536
  assert.throws(() => base45Decode("a"), /length|character/);
  assert.throws(() => base45Decode("aa"), /character/);
});

test("base64 and base64url helpers match Node's", () => {
  for (let n = 0; n < 40; n++) {
    const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 37 + n) & 0xff);
    assert.equal(base64Encode(bytes), Buffer.from(bytes).toString("base64"));
    assert.equal(base64Encode(bytes, { url: true }), Buffer.from(bytes).toString("base64url"));
    assert.deepEqual(base64Decode(Buffer.from(bytes).toString("base64")), bytes);
  }
  assert.equal(base64Encode(fromHex(vectors.keys.issuer.public_key), { url: true }), vectors.issuer_keys[vectors.keys.issuer.kid]);
});

/** A phone: the device key already in its storage (device_a's seed), a server that certifies it with the
 * vector's certificate; the phone's clock as given. */
function phone(entry, nowMs) {
  const storage = memoryStorage({ "yibao.voucher.device-key": base64Encode(seed(entry.issue_device_certificate.device), { url: true }) });
  const certified = [];
  const client = {
    async certifyDevice(publicKey, linkId) {
      certified.push({ publicKey, linkId });
      const cert = parseDeviceCertificate(fromHex(entry.certificate_hex));
      return {
        certificate: Buffer.from(fromHex(entry.certificate_hex)).toString("base64"),
        serial: cert.serial,
        kid: cert.kid,
        linkId,
        notBefore: new Date(cert.notBefore * 1000).toISOString(),
        notAfter: new Date(cert.notAfter * 1000).toISOString(),
        revokedAt: null,
      };
    },
  };
  const clock = { now: nowMs };
  const voucher = new OfflineVoucher({ client, storage, now: () => clock.now });
  return { storage, certified, clock, voucher };
}

test("the phone composes the vector's code offline from the key and certificate in its storage", async () => {
  const entry = offline.find((e) => e.name === "offline, own code");
  const { storage, certified, voucher, clock } = phone(entry, entry.compose_offline_code.now * 1000);
  assert.equal((await voucher.status()).state, "none");
  await assert.rejects(voucher.code(), (e) => e instanceof OfflineCodeUnavailable && e.state === "none");
  await voucher.certify();
  assert.deepEqual(certified, [{ publicKey: Buffer.from(fromHex(vectors.keys.device_a.public_key)).toString("base64url"), linkId: null }]);
  // From here on no server is needed: the vector's code, byte for byte (its counter is 1).
  const first = await voucher.code();
  assert.equal(first.code, entry.code);
  assert.equal(first.counter, 1);
  assert.equal(first.expiresAt, (entry.compose_offline_code.now + 60) * 1000);
  const second = await voucher.code();
  assert.equal(second.counter, 2);
  assert.notEqual(second.code, first.code);
  assert.equal(storage.get("yibao.voucher.counter"), "2");
  // The counter wraps at 65 536.
  storage.set("yibao.voucher.counter", "65535");
  assert.equal((await voucher.code()).counter, 0);
  clock.now += 1000;
  assert.equal((await voucher.status()).state, "valid");
});

test("a certificate that ran out is known offline: no dead code, a message for the page", async () => {
  const entry = offline.find((e) => e.name === "offline, certificate of 1 day that ran out");
  const { voucher, clock } = phone(entry, entry.compose_offline_code.now * 1000);
  await voucher.certify();
  const status = await voucher.status();
  assert.equal(status.state, "expired");
  assert.equal(status.notAfter, (entry.issue_device_certificate.now + 86400) * 1000);
  assert.equal(status.message, "离线码已过期，请联网后刷新");
  await assert.rejects(voucher.code(), (e) => e instanceof OfflineCodeUnavailable && e.state === "expired" && e.message === status.message);
  // The last second it is still good.
  clock.now = status.notAfter;
  assert.equal((await voucher.status()).state, "valid");
  assert.match((await voucher.code()).code, /^YBD:/);
});

test("a certificate not yet valid (phone clock behind) composes no code", async () => {
  const entry = offline.find((e) => e.name === "offline, certificate starting tomorrow");
  const { voucher } = phone(entry, entry.compose_offline_code.now * 1000);
  await voucher.certify();
  assert.equal((await voucher.status()).state, "not_yet_valid");
  await assert.rejects(voucher.code(), (e) => e instanceof OfflineCodeUnavailable && e.state === "not_yet_valid");
});

test("ensureCertified renews a certificate close to its end, and not otherwise", async () => {
  const entry = offline.find((e) => e.name === "offline, own code");
  const notAfter = (entry.issue_device_certificate.now + entry.issue_device_certificate.validity_s) * 1000;
  const { voucher, certified, clock } = phone(entry, entry.compose_offline_code.now * 1000);
  await voucher.ensureCertified();
  await voucher.ensureCertified();
  assert.equal(certified.length, 1);
  clock.now = notAfter - 3600_000; // an hour left: renew
  await voucher.ensureCertified();
  assert.equal(certified.length, 2);
});

test("a new phone makes its key once and keeps it", async () => {
  const storage = memoryStorage();
  const voucher = new OfflineVoucher({ client: { certifyDevice: async () => assert.fail("offline") }, storage });
  const a = await voucher.publicKey();
  const b = await new OfflineVoucher({ client: { certifyDevice: async () => assert.fail("offline") }, storage }).publicKey();
  assert.equal(a, b);
  assert.match(a, /^[A-Za-z0-9_-]{43}$/);
});

test("two first uses at once keep one device key (the certificate must name the key the phone keeps)", async () => {
  const storage = memoryStorage();
  const offlineClient = { certifyDevice: async () => assert.fail("offline") };
  const one = new OfflineVoucher({ client: offlineClient, storage });
  const other = new OfflineVoucher({ client: offlineClient, storage });
  const keys = await Promise.all([one.publicKey(), one.publicKey(), other.publicKey()]);
  assert.equal(new Set(keys).size, 1, keys.join(" "));
  assert.equal(await one.publicKey(), keys[0]);
});

/** A browser's localStorage (its key(i) order shifts as keys go, as the real one's may). */
function fakeLocalStorage() {
  const data = new Map();
  return {
    data,
    get length() {
      return data.size;
    },
    key: (index) => [...data.keys()][index] ?? null,
    getItem: (key) => (data.has(key) ? data.get(key) : null),
    setItem: (key, value) => void data.set(key, String(value)),
    removeItem: (key) => void data.delete(key),
  };
}

/** Two people's offline vouchers on one phone (person 7 certified for themself and for link 12, person
 * 70 for themself), beside keys that are not theirs. */
async function sharedPhone(storage) {
  const entry = offline.find((e) => e.name === "offline, own code");
  const certificate = Buffer.from(fromHex(entry.certificate_hex)).toString("base64");
  const cert = parseDeviceCertificate(fromHex(entry.certificate_hex));
  const client = {
    certifyDevice: async (publicKey, linkId) => ({
      certificate,
      serial: cert.serial,
      kid: cert.kid,
      linkId,
      notBefore: new Date(cert.notBefore * 1000).toISOString(),
      notAfter: new Date(cert.notAfter * 1000).toISOString(),
      revokedAt: null,
    }),
  };
  const deviceKey = base64Encode(seed(entry.issue_device_certificate.device), { url: true });
  const now = () => entry.compose_offline_code.now * 1000;
  const vouchers = {};
  for (const person of ["7", "70"]) {
    await storage.set(`${personVoucherPrefix(person)}.device-key`, deviceKey);
    vouchers[person] = new OfflineVoucher({ client, storage, now, keyPrefix: personVoucherPrefix(person) });
    await vouchers[person].certify();
    await vouchers[person].code();
  }
  await vouchers["7"].certify("12");
  await storage.set("yibao.session", "{}");
  await storage.set("yibao.h5.care.7", "1");
  return vouchers;
}

const storages = {
  "localStorage": () => {
    const local = fakeLocalStorage();
    return { storage: localStorageAdapter(local), keys: () => [...local.data.keys()].sort() };
  },
  "wx storage": async () => {
    const wx = await fakeWx();
    return { storage: wxStorageAdapter(wx), keys: () => [...wx.storage.keys()].sort() };
  },
  "memory": () => {
    const storage = memoryStorage();
    return { storage, keys: () => [...storage.data.keys()].sort() };
  },
};

for (const [name, make] of Object.entries(storages)) {
  test(`forgetPerson removes one person's device key, certificates and counter (${name})`, async () => {
    const { storage, keys } = await make();
    const vouchers = await sharedPhone(storage);
    assert.deepEqual(await vouchers["7"].certifiedLinks(), ["12"]);
    assert.ok(keys().includes("yibao.voucher.7.certificate.12") && keys().includes("yibao.voucher.7.counter"));
    await forgetPerson(storage, "7");
    assert.deepEqual(keys(), [
      "yibao.h5.care.7",
      "yibao.session",
      "yibao.voucher.70.certificate.self",
      "yibao.voucher.70.counter",
      "yibao.voucher.70.device-key",
    ]);
    assert.equal((await vouchers["7"].status()).state, "none");
    assert.equal((await vouchers["7"].status("12")).state, "none");
    assert.deepEqual(await vouchers["7"].certifiedLinks(), []);
    assert.match((await vouchers["70"].code()).code, /^YBD:/); // the other person's voucher still works
    await vouchers["70"].forgetAll();
    assert.deepEqual(keys(), ["yibao.h5.care.7", "yibao.session"]);
  });
}

test("a wx without getStorageInfoSync: forgetPerson still removes the device key, counter and own certificate", async () => {
  const wx = await fakeWx();
  delete wx.getStorageInfoSync;
  const storage = wxStorageAdapter(wx);
  assert.equal(storage.keys, undefined);
  await sharedPhone(storage);
  await forgetPerson(storage, "7");
  const left = [...wx.storage.keys()].filter((key) => key.startsWith("yibao.voucher.7."));
  assert.deepEqual(left, ["yibao.voucher.7.certificate.12"]); // useless without the device key
});
