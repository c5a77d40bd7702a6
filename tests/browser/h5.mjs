// The H5 twin walked through in a phone-sized Chromium:
//   node h5.mjs BASE_URL SCREENSHOT_DIR SETUP.json
// SETUP: { spouseName, spouseIdNumber, expiredToken, attachment (a path) } from the pytest side.
// Logs in as `resident` (demo picker), shows her QR, her records, her father's QR and records through the
// family link, asks to link her husband, logs in as him to confirm, makes a filing draft offline, sees it
// synced when the network returns, attaches a file, submits, and follows the status live while a
// reviewer (over plain HTTP here) claims and decides it. Mid-way, the session's access token is replaced by
// an expired one: the page must carry on (silent refresh). Offline, the QR turns into the offline form;
// 31 days later (page clock), past the device certificate's validity, the page says so instead.
// A shared phone: a logout leaves nothing of the person (replica database, cached links, offline voucher
// keys), and the next person's login finds none of it; a session lost mid-use stops the replication and
// says so in Chinese. Two tabs share one replica (a draft saved offline in one shows in the other); a
// link ended from the family page (with a confirmation step) takes the relative's QR, records and
// offline certificate with it. Every page is shot in normal and care mode. Prints one JSON report
// (lib/browser.mjs).
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";

import { runScenario } from "./lib/browser.mjs";

const [base, shots, setupPath] = process.argv.slice(2);
if (!base || !shots || !setupPath) {
  console.error("usage: node h5.mjs BASE_URL SCREENSHOT_DIR SETUP.json");
  process.exit(2);
}
const setup = JSON.parse(readFileSync(setupPath, "utf8"));

async function gql(query, variables = {}, token = null) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(`${base}/graphql`, { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  const body = await response.json();
  if (body.errors) throw new Error(`${query.slice(0, 40)}: ${JSON.stringify(body.errors)}`);
  return body.data;
}

await runScenario(
  async ({ context, page, report }) => {
    report.steps = {};
    report.screenshots = [];
    report.graphqlOperations = [];
    report.pageErrorStacks = [];
    report.wsErrors = [];
    const sockets = []; // every WebSocket the pages opened: { closed }
    report.sockets = sockets;
    const watchSockets = (target, label) => {
      // A new document (a reload) has none of the old one's sockets, whether or not they said goodbye.
      target.on("domcontentloaded", () => sockets.filter((entry) => entry.tab === label).forEach((entry) => (entry.closed = true)));
      target.on("websocket", (socket) => {
        const entry = { tab: label, at: Object.keys(report.steps).at(-1) ?? "start", closed: false };
        sockets.push(entry);
        socket.on("close", () => (entry.closed = true));
        socket.on("framereceived", (frame) => {
          if (typeof frame.payload === "string" && frame.payload.includes('"errors"')) report.wsErrors.push(frame.payload.slice(0, 500));
        });
      });
    };
    watchSockets(page, 1);
    page.on("pageerror", (error) => report.pageErrorStacks.push({ at: Object.keys(report.steps).at(-1) ?? "start", stack: error.stack }));
    page.on("request", (request) => {
      if (request.url().endsWith("/graphql") && request.method() === "POST") {
        try {
          const body = JSON.parse(request.postData() ?? "{}");
          report.graphqlOperations.push(body.operationName ?? (body.query ?? "").trim().slice(0, 40));
        } catch {
          // not JSON: the server will say so
        }
      }
    });
    await page.clock.install(); // real time flows; later jumped forward for the certificate's expiry
    const shot = async (name) => {
      const path = join(shots, `${name}.png`);
      await page.screenshot({ path, fullPage: true });
      report.screenshots.push(path);
    };
    const both = async (name, ready) => {
      // Normal, then care mode (toggled with the header button, as a resident would), then back; each
      // shot once the page has drawn itself again (`ready`).
      await page.locator(ready).first().waitFor();
      await shot(`${name}-normal`);
      await page.locator("#care-toggle").click();
      await page.locator("body.care").waitFor();
      await page.locator(ready).first().waitFor();
      await shot(`${name}-care`);
      await page.locator("#care-toggle").click();
      await page.waitForFunction(() => !document.body.classList.contains("care"));
      await page.locator(ready).first().waitFor();
    };
    const goto = async (hash, ready) => {
      await page.evaluate((h) => (location.hash = h), hash);
      await page.locator(ready).first().waitFor();
    };
    const qrForm = () => page.locator("#qr-kind").getAttribute("data-form");
    // True once `condition` holds in the page (false after `timeout`): the report says which, and
    // pytest asserts, instead of the walk stopping at the first thing that never happens.
    const eventually = (target, condition, arg, timeout = 30_000) =>
      target.waitForFunction(condition, arg, { timeout, polling: 100 }).then(() => true, () => false);
    const until = async (condition, timeout = 30_000) => {
      for (const end = Date.now() + timeout; Date.now() < end; await new Promise((r) => setTimeout(r, 100))) if (await condition()) return true;
      return Boolean(await condition());
    };
    // What this browser keeps of `person` ({ id, name }): the replica's IndexedDB databases (dexie:
    // rxdb-dexie-yibao-h5-<id>--<version>--<collection>), the person's localStorage keys, any stored
    // value naming them, and every voucher or cached-links key (of anyone).
    const traces = (target, person) =>
      target.evaluate(async ({ id, name }) => {
        const database = `yibao-h5-${id.replace(/[^0-9a-z]/gi, "")}--`;
        const keys = Object.keys(localStorage).sort();
        const owner = (key) => /^(?:yibao\.h5\.links\.|yibao\.voucher\.|yibao\.h5\.care\.)([^.]*)/.exec(key)?.[1];
        return {
          databases: (await indexedDB.databases()).map((db) => db.name ?? "").filter((n) => n.includes(database)).sort(),
          ownKeys: keys.filter((key) => owner(key) === id && !key.startsWith("yibao.h5.care.")),
          valuesNaming: keys.filter((key) => (localStorage.getItem(key) ?? "").includes(name)),
          voucherKeys: keys.filter((key) => key.startsWith("yibao.voucher.")).length,
          linkKeys: keys.filter((key) => key.startsWith("yibao.h5.links.")).length,
          care: localStorage.getItem(`yibao.h5.care.${id}`),
          me: localStorage.getItem("yibao.h5.me"),
          session: localStorage.getItem("yibao.session"),
        };
      }, person);
    const whoIsIn = () => page.evaluate(() => JSON.parse(localStorage.getItem("yibao.h5.me") ?? "null"));
    const certKey = (personId, linkId) => `yibao.voucher.${personId}.certificate.${linkId}`;
    const hasKey = (target, key, present) => eventually(target, ([k, want]) => (localStorage.getItem(k) !== null) === want, [key, present]);

    // ---- login (demo picker) and my QR
    await page.goto(`${base}/h5/`);
    await page.locator("#page-login").waitFor();
    report.steps.loginChoices = await page.locator("[data-login]").evaluateAll((els) => els.map((e) => e.dataset.login));
    await shot("login-normal");
    await page.locator('[data-login="resident"]').click();
    await page.locator('#qr-kind[data-form="online"]').waitFor();
    report.steps.qrOnline = { code: await page.locator("#qr-box").getAttribute("data-code"), lang: await page.evaluate(() => document.documentElement.lang) };
    const her = await whoIsIn();
    await both("qr", "#qr-image");
    // Refreshing before expiry: the code changes by itself within the voucher's lifetime.
    const first = report.steps.qrOnline.code;
    await page.waitForFunction((c) => document.querySelector("#qr-box")?.dataset.code && document.querySelector("#qr-box").dataset.code !== c, first, { timeout: 70_000 });
    report.steps.qrRefreshed = (await page.locator("#qr-box").getAttribute("data-code")) !== first;

    // ---- my records
    await goto("#/records", "#settlements");
    report.steps.records = { settlements: await page.locator("[data-settlement]").count() };
    await page.locator('[data-tab="flows"]').click();
    report.steps.records.balance = await page.locator("#balance").textContent();
    await page.locator('[data-tab="contributions"]').click();
    report.steps.records.contributions = await page.locator("#contributions li").count();
    await page.locator('[data-tab="settlements"]').click();
    await both("records", "[data-settlement]");

    // ---- an expired session mid-use: the stored access token replaced by an expired one
    await page.evaluate((token) => {
      const session = JSON.parse(localStorage.getItem("yibao.session"));
      session.accessToken = token;
      session.expiresAt = Date.now() + 600_000; // the page believes it is still good
      localStorage.setItem("yibao.session", JSON.stringify(session));
    }, setup.expiredToken);
    const refreshesBefore = report.graphqlOperations.filter((op) => op === "RefreshToken").length;
    await page.locator('[data-tab="contributions"]').click();
    await goto("#/family", "#links");
    await goto("#/records", "#settlements");
    report.steps.expiredSession = {
      refreshes: report.graphqlOperations.filter((op) => op === "RefreshToken").length - refreshesBefore,
      stillLoggedIn: (await page.locator("#page-login").count()) === 0,
      settlements: await page.locator("[data-settlement]").count(),
    };

    // ---- a page that cannot be drawn says why in Chinese (a captive portal's HTML for the links)
    const portal = async (route) => {
      if (JSON.parse(route.request().postData() ?? "{}").operationName !== "FamilyLinks") return route.fallback();
      await route.fulfill({ status: 200, contentType: "text/html", body: "<html><body>Wi-Fi login required</body></html>" });
    };
    await page.route("**/graphql", portal);
    await goto("#/family", "#page-family .error");
    report.steps.pageError = { text: await page.locator("#page-family .error").first().textContent(), retry: await page.locator("#page-retry").count() };
    await page.unroute("**/graphql", portal);
    if (report.steps.pageError.retry) {
      await page.locator("#page-retry").click();
      await page.locator("#links").waitFor();
    }

    // ---- my family: the father's QR and records through the link
    await goto("#/family", "#links");
    await both("family", "[data-link]");
    const elder = page.locator('[data-link][data-role="holder"][data-status="ACTIVE"]').first();
    await elder.waitFor();
    report.steps.familyLinks = await page.locator("[data-link]").count();
    await elder.locator('[data-action="relative-qr"]').click();
    await page.locator('#qr-kind[data-form="online"]').waitFor();
    report.steps.relativeQr = { heading: await page.locator("#page-qr h2").textContent(), code: await page.locator("#qr-box").getAttribute("data-code") };
    await shot("relative-qr-normal");
    await goto("#/family", "#links");
    await page.locator('[data-link][data-role="holder"][data-status="ACTIVE"] [data-action="relative-records"]').first().click();
    await page.locator("#settlements").waitFor();
    report.steps.relativeRecords = { heading: await page.locator("#page-records h2").textContent(), settlements: await page.locator("[data-settlement]").count() };
    await both("relative-records", "[data-settlement]");

    // ---- link my husband; he confirms on his own login
    await goto("#/family", "#link-form");
    await page.locator("#link-relationship").selectOption("SPOUSE");
    await page.locator("#link-name").fill(setup.spouseName);
    await page.locator("#link-id-number").fill(setup.spouseIdNumber);
    await page.locator("#link-submit").click();
    await page.locator('[data-link][data-status="PENDING"][data-role="holder"]').waitFor();
    report.steps.linkRequested = true;
    // A shared phone: she logs out, he logs in. Nothing of hers may be left to read.
    report.steps.herTracesBeforeLogout = await traces(page, her);
    await page.locator("#logout").click();
    await page.locator('[data-login="spouse"]').waitFor();
    report.steps.herTracesAfterLogout = await traces(page, her);
    await page.locator('[data-login="spouse"]').click();
    await page.locator("#qr-kind").waitFor();
    const him = await whoIsIn();
    report.steps.spouseCare = await page.evaluate(() => document.body.classList.contains("care"));
    await page.locator('#qr-kind[data-form="online"]').waitFor();
    await hasKey(page, certKey(him.id, "self"), true); // his own offline certificate: his replica is open too
    report.steps.herTracesAtHisLogin = await traces(page, her);
    await goto("#/family", "#links");
    const request = page.locator('[data-link][data-status="PENDING"][data-role="relative"]');
    await request.waitFor();
    await shot("family-confirm-normal");
    await request.locator('[data-action="accept"]').click();
    await page.locator('[data-link][data-status="ACTIVE"][data-role="relative"]').waitFor();
    report.steps.linkConfirmed = true;
    report.steps.hisTracesBeforeLogout = await traces(page, him);
    await page.locator("#logout").click();
    await page.locator('[data-login="resident"]').waitFor();
    report.steps.hisTracesAfterLogout = await traces(page, him);
    await page.locator('[data-login="resident"]').click();
    await page.locator("#qr-kind").waitFor();
    await goto("#/family", "#links");
    report.steps.activeAfterConfirm = await page.locator('[data-link][data-role="holder"][data-status="ACTIVE"]').count();

    // ---- his records reach her replica; he ends the link on his phone: they leave it, live
    const husband = page.locator('[data-link][data-role="holder"][data-status="ACTIVE"]', { hasText: setup.spouseName });
    const husbandLink = await husband.getAttribute("data-link");
    await husband.locator('[data-action="relative-qr"]').click();
    await page.locator('#qr-kind[data-form="online"]').waitFor();
    report.steps.husbandCertificate = await hasKey(page, certKey(her.id, husbandLink), true);
    // While the link is active its certificate stays, whatever the replica says of it (a reload: a
    // new replica, its first pull, and the sweep of certificates after it).
    await page.reload();
    await page.locator("#qr-kind").waitFor();
    await goto(`#/records?link=${husbandLink}`, "#page-records [data-settlement]");
    await page.waitForTimeout(1000); // the sweep follows the first pull of the links
    report.steps.husbandCertificateKept = await page.evaluate((key) => localStorage.getItem(key) !== null, certKey(her.id, husbandLink));
    await goto("#/family", "#links");
    await husband.locator('[data-action="relative-records"]').click();
    await page.locator("#page-records [data-settlement]").first().waitFor({ timeout: 60_000 });
    report.steps.husbandRecords = await page.locator("[data-settlement]").count();
    const spouseToken = (await gql('mutation { login(provider: "demo", code: "spouse") { accessToken } }')).login.accessToken;
    await gql("mutation($id: ID!) { unlinkFamily(linkId: $id) { status } }", { id: husbandLink }, spouseToken);
    await page.locator("#settlements p.muted").waitFor({ timeout: 60_000 });
    report.steps.husbandRecordsAfterUnlink = await page.locator("[data-settlement]").count();
    report.steps.husbandRemovedText = await page.locator("#settlements p.muted").textContent();
    // The link left her replica: his offline certificate on her phone goes with it, and his QR too.
    report.steps.husbandCertificateGone = await hasKey(page, certKey(her.id, husbandLink), false);
    await goto(`#/qr?link=${husbandLink}`, "#qr-dead, #qr-image, #qr-box .error");
    report.steps.endedLinkQr = { dead: await page.locator("#qr-dead").textContent().catch(() => null), images: await page.locator("#qr-image").count() };

    // ---- she links him again, and ends it herself from 我的家人 (a tap asks, a second one ends it)
    await goto("#/family", "#link-form");
    await page.locator("#link-relationship").selectOption("SPOUSE");
    await page.locator("#link-name").fill(setup.spouseName);
    await page.locator("#link-id-number").fill(setup.spouseIdNumber);
    await page.locator("#link-submit").click();
    const again = page.locator('[data-link][data-status="PENDING"][data-role="holder"]', { hasText: setup.spouseName });
    await again.waitFor();
    const relinkId = await again.getAttribute("data-link");
    await gql("mutation($id: ID!) { respondFamilyLink(id: $id, accept: true) { status } }", { id: relinkId }, spouseToken);
    await goto("#/records", "#settlements"); // and back: the family page asks the server again
    await goto("#/family", `[data-link="${relinkId}"][data-status="ACTIVE"]`);
    const relinked = page.locator(`[data-link="${relinkId}"]`);
    await relinked.locator('[data-action="relative-qr"]').click();
    await page.locator('#qr-kind[data-form="online"]').waitFor();
    const relinkCertificate = await hasKey(page, certKey(her.id, relinkId), true);
    await goto("#/family", `[data-link="${relinkId}"] [data-action="end-link"]`);
    await relinked.locator('[data-action="end-link"]').click();
    await relinked.locator('[role="alertdialog"]:not(.hidden)').waitFor();
    const askedText = await relinked.locator('[role="alertdialog"]').textContent();
    await shot("family-end-link-normal");
    const statusOnServer = async () =>
      (await gql("query { familyLinks(includeClosed: true) { id status } }", {}, spouseToken)).familyLinks.find((l) => l.id === relinkId)?.status;
    const afterAsking = await statusOnServer();
    await relinked.locator('[data-action="end-link-cancel"]').click();
    const cancelled = await relinked.locator('[role="alertdialog"].hidden').count();
    await page.locator("#care-toggle").click();
    await page.locator("body.care").waitFor();
    await relinked.locator('[data-action="end-link"]').click();
    await relinked.locator('[role="alertdialog"]:not(.hidden)').waitFor();
    await shot("family-end-link-care");
    await relinked.locator('[data-action="end-link-confirm"]').click();
    await relinked.waitFor({ state: "detached" });
    await page.locator("#care-toggle").click();
    await page.waitForFunction(() => !document.body.classList.contains("care"));
    report.steps.endLink = {
      relinkCertificate,
      askedText,
      afterAsking,
      cancelled,
      afterConfirm: await statusOnServer(),
      certificateGone: await hasKey(page, certKey(her.id, relinkId), false),
    };
    await goto(`#/records?link=${relinkId}`, "#settlements");
    await page.locator("#settlements p.muted").waitFor({ timeout: 60_000 });
    report.steps.endLink.records = { settlements: await page.locator("[data-settlement]").count(), text: await page.locator("#settlements p.muted").textContent() };
    await goto(`#/qr?link=${relinkId}`, "#qr-dead, #qr-image, #qr-box .error");
    report.steps.endLink.qr = { dead: await page.locator("#qr-dead").textContent().catch(() => null), images: await page.locator("#qr-image").count() };
    await goto("#/family", "#links");

    // ---- care mode is remembered per user: on for resident, across a reload, off for her husband
    await page.locator("#care-toggle").click();
    report.steps.failuresBeforeReload = report.failedRequests.length;
    await page.reload();
    await page.locator("#links, #qr-kind").first().waitFor();
    report.steps.careRemembered = await page.evaluate(() => document.body.classList.contains("care"));
    await page.locator("#care-toggle").click();

    // ---- my filings: a draft made offline, synced when the network returns
    await goto("#/filings", "#filing-form");
    await both("filings", "#filings .card, #filings p.muted");
    // A second tab on the same replica (one browser, one login): it sees what the first one saves.
    const tab = await context.newPage();
    watchSockets(tab, 2);
    await tab.goto(`${base}/h5/#/filings`);
    await tab.locator("#filings .card, #filings p.muted").first().waitFor();
    await context.setOffline(true);
    await page.locator("#net-banner:not(.hidden)").waitFor();
    await page.locator("#filing-reason").fill("随女儿在上海长期居住");
    await page.locator("#filing-save").click();
    const local = page.locator('[data-status="LOCAL"]');
    await local.waitFor();
    const clientId = await local.getAttribute("data-client-id");
    report.steps.offlineDraft = { clientId, local: true };
    await shot("filings-offline-normal");
    const inOtherTab = (selector) => eventually(tab, (s) => document.querySelector(s) !== null, selector);
    report.steps.otherTab = { local: await inOtherTab(`[data-status="LOCAL"][data-client-id="${clientId}"]`) };
    await context.setOffline(false);
    const synced = page.locator(`[data-filing][data-client-id="${clientId}"]`);
    await synced.waitFor({ timeout: 30_000 });
    const filingId = await synced.getAttribute("data-filing");
    report.steps.draftSynced = { filingId, status: await synced.getAttribute("data-status"), localLeft: await page.locator('[data-status="LOCAL"]').count() };
    report.steps.otherTab.synced = await inOtherTab(`[data-filing="${filingId}"][data-client-id="${clientId}"]`);
    report.steps.otherTab.localLeft = await tab.locator('[data-status="LOCAL"]').count();

    // attach the material, submit
    await synced.locator('input[type="file"]').setInputFiles(setup.attachment);
    await synced.locator('[data-action="upload"]').click();
    await page.locator(`[data-filing="${filingId}"] [data-action="submit"]:not([disabled])`).waitFor();
    await page.locator(`[data-filing="${filingId}"] [data-action="submit"]`).click();
    await page.locator(`[data-filing="${filingId}"][data-status="SUBMITTED"]`).waitFor();
    report.steps.submitted = true;
    // a reviewer takes it up: the page hears of it over the notification subscription
    const reviewer = (await gql('mutation { login(provider: "demo", code: "reviewer") { accessToken } }')).login.accessToken;
    await gql("mutation($id: ID!) { claimFiling(id: $id) { status } }", { id: filingId }, reviewer);
    await gql("mutation($id: ID!) { decideFiling(id: $id, decision: APPROVE) { status } }", { id: filingId }, reviewer);
    await page.locator(`[data-filing="${filingId}"]:not([data-status="SUBMITTED"])`).waitFor({ timeout: 30_000 });
    report.steps.liveStatus = await page.locator(`[data-filing="${filingId}"]`).getAttribute("data-status");
    report.steps.liveStatusLabel = await page.locator(`[data-filing="${filingId}"] [data-role="status"]`).textContent();
    await shot("filings-live-normal");

    // ---- a very slow network (DevTools' Slow 3G): a second draft still syncs, once
    const cdp = await context.newCDPSession(page);
    await cdp.send("Network.enable");
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 2000, downloadThroughput: 50_000, uploadThroughput: 50_000 });
    await page.locator("#filing-reason").fill("慢网络下保存的草稿");
    await page.locator("#filing-save").click();
    const slowLocal = page.locator('[data-status="LOCAL"]').first();
    await slowLocal.waitFor();
    const slowId = await slowLocal.getAttribute("data-client-id");
    await page.locator(`[data-filing][data-client-id="${slowId}"]`).waitFor({ timeout: 90_000 });
    await cdp.send("Network.emulateNetworkConditions", { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
    const residentToken = (await gql('mutation { login(provider: "demo", code: "resident") { accessToken } }')).login.accessToken;
    const mine = await gql("{ myFilings(first: 50) { edges { node { id clientId } } } }", {}, residentToken);
    report.steps.slowDraft = {
      clientId: slowId,
      onServer: mine.myFilings.edges.filter((edge) => edge.node.clientId === slowId).length,
      offlineOnServer: mine.myFilings.edges.filter((edge) => edge.node.clientId === clientId).length,
    };

    // ---- a draft the server refuses (a region code with a digit missing): its card says why in
    // Chinese, the next draft still reaches the server, and the refused one can be discarded
    const filedBefore = await page.locator("[data-filing]").count();
    await page.locator("#filing-region").fill("31011");
    await page.locator("#filing-reason").fill("区划代码少填了一位");
    await page.locator("#filing-save").click();
    const refusedCard = page.locator('[data-status="REFUSED"]');
    await refusedCard.waitFor({ timeout: 30_000 });
    const refusedId = await refusedCard.getAttribute("data-client-id");
    const refusalText = await refusedCard.locator('[data-role="refusal"]').textContent();
    await page.locator("#filing-region").fill("310115");
    await page.locator("#filing-reason").fill("改正后重新填写");
    await page.locator("#filing-save").click();
    const nextSynced = await until(async () => (await page.locator("[data-filing]").count()) > filedBefore);
    await shot("filings-refused-normal");
    await refusedCard.locator('[data-action="discard"]').click();
    await page.locator(`[data-client-id="${refusedId}"]`).waitFor({ state: "detached" });
    const afterRefusal = await gql("{ myFilings(first: 50) { edges { node { clientId } } } }", {}, residentToken);
    report.steps.refusedDraft = {
      text: refusalText,
      nextSynced,
      refusedOnServer: afterRefusal.myFilings.edges.filter((edge) => edge.node.clientId === refusedId).length,
      refusalsKept: await page.evaluate((id) => localStorage.getItem(`yibao.h5.refused.${id}`), her.id),
    };

    // ---- a filing she makes for her father (file_on_behalf) is in her list, marked as his; withdrawn,
    // the draft leaves her replica again
    const links = await gql("{ familyLinks { id myRole relativeName relationship } }", {}, residentToken);
    const father = links.familyLinks.find((link) => link.myRole === "holder" && link.relationship === "PARENT");
    const today = new Date(Date.now() + 8 * 3600_000).toISOString().slice(0, 10);
    const forFather = (
      await gql(
        "mutation($input: CreateFilingInput!) { createFiling(input: $input) { id } }",
        { input: { clientId: randomUUID(), kind: "CROSS_REGION", linkId: father.id, fields: { registrationType: "temporary_trip", destinationRegion: "310115", startOn: today, endOn: today, reason: "女儿代办" } } },
        residentToken,
      )
    ).createFiling;
    const fatherCard = page.locator(`[data-filing="${forFather.id}"] [data-role="for"]`);
    await fatherCard.waitFor({ timeout: 30_000 });
    report.steps.forFather = { name: father.relativeName, text: await fatherCard.textContent(), mine: await page.locator(`[data-filing="${filingId}"] [data-role="for"]`).count() };
    await gql("mutation($id: ID!) { withdrawFiling(id: $id) { status } }", { id: forFather.id }, residentToken);
    report.steps.forFather.gone = await until(async () => (await page.locator(`[data-filing="${forFather.id}"]`).count()) === 0);

    // ---- the session is lost mid-use (her login revoked, her access token refused): both tabs stop
    // replicating and say so; her data stays for her, and the next person's login removes it.
    await goto("#/records", "#settlements");
    const session = await page.evaluate(() => JSON.parse(localStorage.getItem("yibao.session")));
    await gql("mutation($t: String!) { logout(refreshToken: $t) }", { t: session.refreshToken });
    await page.evaluate((token) => {
      const current = JSON.parse(localStorage.getItem("yibao.session"));
      current.accessToken = token;
      localStorage.setItem("yibao.session", JSON.stringify(current));
    }, setup.expiredToken);
    await goto("#/family", "#login-notice, #page-login");
    const lost = (report.steps.sessionLost = { notice: await page.locator("#login-notice").textContent().catch(() => null) });
    lost.otherTab = await eventually(tab, () => document.querySelector("#page-login") !== null);
    lost.otherTabNotice = await tab.locator("#login-notice").textContent().catch(() => null);
    lost.socketsClosed = await until(() => sockets.every((socket) => socket.closed));
    // Every timer the pages hold (RxDB's retries, graphql-ws' reconnects, the stream restarts) runs:
    // a replica still running would open a socket again.
    const socketsBefore = sockets.length;
    await page.clock.runFor(60_000);
    await page.clock.setSystemTime(Date.now()); // and back to the server's time (the QR's expiry)
    await page.waitForTimeout(1000); // lets a socket opened by those timers reach the report
    lost.socketsAfter = sockets.length - socketsBefore;
    lost.herTraces = await traces(page, her);
    await page.locator('[data-login="stranger"]').click();
    await page.locator('#qr-kind[data-form="online"]').waitFor();
    lost.herKeysAtNextLogin = (await traces(page, her)).ownKeys;
    lost.herDatabaseRemoved = await until(async () => (await traces(page, her)).databases.length === 0);
    lost.herTracesAtNextLogin = await traces(page, her);
    lost.otherTabFollows = await eventually(tab, () => document.querySelector("#qr-kind") !== null);
    const stranger = await whoIsIn();
    await page.locator("#logout").click();
    await page.locator('[data-login="resident"]').waitFor();
    lost.strangerTracesAfterLogout = await traces(page, stranger);
    lost.otherTabAfterLogout = await eventually(tab, () => document.querySelector("#page-login") !== null);
    await tab.close();
    await page.locator('[data-login="resident"]').click();
    await page.locator('#qr-kind[data-form="online"]').waitFor();

    // ---- offline: the QR's offline form; then past the certificate's validity
    await goto("#/qr", '#qr-kind[data-form="online"]');
    await page.waitForTimeout(1500); // the device certificate is fetched after the online code shows
    await context.setOffline(true);
    await page.locator('#qr-kind:not([data-form="online"])').waitFor();
    report.steps.offlineQr = { form: await qrForm(), code: await page.locator("#qr-box").getAttribute("data-code") };
    await both("qr-offline", "#qr-image");
    await page.clock.setSystemTime(Date.now() + 31 * 86_400_000);
    await page.evaluate(() => (location.hash = "#/qr?again=1"));
    await page.locator("#qr-kind").waitFor();
    await page.waitForTimeout(300);
    report.steps.offlineExpired = { form: await qrForm(), text: await page.locator("#qr-dead").textContent().catch(() => null) };
    await both("qr-offline-expired", "#qr-dead");
    await context.setOffline(false);
  },
  { viewport: { width: 390, height: 844 } },
);
