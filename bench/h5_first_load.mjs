// The H5 page's first load on throttled 3G (Chrome DevTools network emulation through a CDP session),
// in Debian's chromium driven by playwright-core (tests/browser's packages; never a browser download).
//   node bench/h5_first_load.mjs BASE_URL RUNS     prints one JSON report
// Each run has a fresh profile (cold HTTP cache). Per profile and run:
//   first visit   no session: the login picker, a tap on `resident`, her QR
//   returning     a stored session, cold HTTP cache: straight to the QR
//   warm cache    a stored session, the hashed assets cached (immutable): straight to the QR
// Time: from navigation start to the page's `yibao:qr-shown` event (the QR image mounted), by the page's
// own clock (performance.now). Bytes: encodedDataLength of every response until then (gzip bodies and
// headers, as on the wire), from the CDP Network domain.
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { CHROMIUM, CHROMIUM_ARGS } from "../tests/browser/lib/browser.mjs";

const require = createRequire(new URL("../tests/browser/package.json", import.meta.url));
const { chromium } = require("playwright-core");

const [base, runsArg] = process.argv.slice(2);
const runs = Number(runsArg ?? 3);
if (!base || !(runs >= 1 && runs <= 20)) {
  console.error("usage: node bench/h5_first_load.mjs BASE_URL [RUNS 1..20]");
  process.exit(2);
}

// Chrome DevTools' presets (front_end/core/sdk/NetworkManager.ts): throughput in bytes/s, latency in ms.
const PROFILES = {
  "3G": { latency: 562.5, downloadThroughput: (1.6 * 1000 * 1000 * 0.9) / 8, uploadThroughput: (750 * 1000 * 0.9) / 8 },
  "Slow 3G": { latency: 2000, downloadThroughput: (500 * 1000 * 0.8) / 8, uploadThroughput: (500 * 1000 * 0.8) / 8 },
};

async function withBrowser(fn) {
  const profile = mkdtempSync(join(tmpdir(), "yibao-bench-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 390, height: 844 },
    serviceWorkers: "block",
  });
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(120_000);
    await page.addInitScript(() => {
      window.addEventListener("yibao:qr-shown", () => {
        window.__qrShownAt ??= performance.now();
      });
    });
    const cdp = await context.newCDPSession(page);
    await cdp.send("Network.enable");
    const wire = { bytes: 0, requests: 0, items: [] };
    const urls = new Map();
    cdp.on("Network.requestWillBeSent", (event) => {
      let label = event.request.url.replace(base, "");
      if (event.request.postData) {
        try {
          const body = JSON.parse(event.request.postData);
          label += ` ${body.operationName ?? body.query.trim().slice(0, 30)}`;
        } catch {
          // not JSON
        }
      }
      urls.set(event.requestId, label);
    });
    cdp.on("Network.loadingFinished", (event) => {
      wire.bytes += event.encodedDataLength;
      if (event.encodedDataLength > 0) wire.requests += 1; // not the cache hits and data: URLs
      wire.items.push([urls.get(event.requestId), event.encodedDataLength]);
    });
    return await fn({ page, cdp, wire });
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

const throttle = (cdp, conditions) => cdp.send("Network.emulateNetworkConditions", { offline: false, ...conditions });
const unthrottle = (cdp) => cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });

async function qrShown(page) {
  await page.waitForFunction(() => window.__qrShownAt !== undefined, null, { polling: 50 });
  return page.evaluate(() => window.__qrShownAt);
}

async function firstVisit(conditions) {
  return withBrowser(async ({ page, cdp, wire }) => {
    await throttle(cdp, conditions);
    await page.goto(`${base}/h5/`, { waitUntil: "commit" });
    await page.locator('[data-login="resident"]').waitFor();
    const loginShownMs = await page.evaluate(() => performance.now());
    const bytesToLogin = wire.bytes;
    await page.locator('[data-login="resident"]').click();
    const qrMs = await qrShown(page);
    if (process.env.H5_BENCH_DEBUG) console.error(JSON.stringify(wire.items));
    return { loginShownMs, bytesToLogin, qrMs, bytes: wire.bytes, requests: wire.requests };
  });
}

async function returning(conditions, { warm }) {
  return withBrowser(async ({ page, cdp, wire }) => {
    await page.goto(`${base}/h5/`);
    await page.locator('[data-login="resident"]').click();
    await qrShown(page);
    await page.waitForTimeout(1000); // the background fetches after the QR (other pages, voucher) settle
    if (!warm) await cdp.send("Network.clearBrowserCache");
    await throttle(cdp, conditions);
    wire.bytes = 0;
    wire.requests = 0;
    await page.goto(`${base}/h5/`, { waitUntil: "commit" });
    const qrMs = await qrShown(page);
    const result = { qrMs, bytes: wire.bytes, requests: wire.requests };
    await unthrottle(cdp);
    return result;
  });
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

const report = { runs, profiles: {} };
for (const [name, conditions] of Object.entries(PROFILES)) {
  const samples = { firstVisit: [], returning: [], warm: [] };
  for (let i = 0; i < runs; i++) {
    samples.firstVisit.push(await firstVisit(conditions));
    samples.returning.push(await returning(conditions, { warm: false }));
    samples.warm.push(await returning(conditions, { warm: true }));
  }
  const summary = {};
  for (const [kind, list] of Object.entries(samples)) {
    summary[kind] = Object.fromEntries(Object.keys(list[0]).map((key) => [key, median(list.map((s) => s[key]))]));
    summary[kind].qrMsAll = list.map((s) => Math.round(s.qrMs));
  }
  report.profiles[name] = { conditions, ...summary };
}
process.stdout.write(JSON.stringify(report) + "\n");
