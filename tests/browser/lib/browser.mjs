// Shared machinery of the browser tests: Debian's chromium (never a downloaded browser) driven by
// playwright-core, a fresh profile per run, and no network but loopback. Every request to another host
// is aborted and recorded, so a test can assert that the page needed nothing from outside.
//
//   import { runScenario } from "./lib/browser.mjs";
//   await runScenario(async ({ page, report }) => { ...; report.something = ...; });
//
// runScenario prints one JSON line (the report) on stdout and exits 0, or 1 when the scenario threw
// (the report then has `error`). pytest (tests/browser/conftest.py) runs the script and asserts.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { chromium } from "playwright-core";

export const CHROMIUM = process.env.YIBAO_CHROMIUM || "/usr/bin/chromium";
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  // Below the page's routing, too: no host (name or address) resolves but loopback ones.
  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.*, EXCLUDE [::1]",
];

const LOOPBACK_HOSTS = new Set(["localhost", "[::1]"]);

/** True for URLs that stay on this machine (loopback) or never touch the network (data:, blob:). */
export function isLoopback(url) {
  const parsed = new URL(url);
  if (["data:", "blob:", "about:"].includes(parsed.protocol)) return true;
  return LOOPBACK_HOSTS.has(parsed.hostname) || /^127(\.\d{1,3}){3}$/.test(parsed.hostname);
}

export async function runScenario(scenario, { viewport = { width: 1280, height: 800 } } = {}) {
  const report = {
    requests: [], // every request that went out (all loopback): { method, url, status }
    blocked: [], // every request to another host: aborted here, listed here
    consoleErrors: [],
    pageErrors: [],
    failedRequests: [],
  };
  const profile = mkdtempSync(join(tmpdir(), "yibao-chromium-"));
  let context;
  let code = 0;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport,
      serviceWorkers: "block",
      timeout: 60_000,
    });
    await context.route("**/*", async (route) => {
      const request = route.request();
      if (isLoopback(request.url())) {
        await route.continue();
      } else {
        report.blocked.push(request.url());
        await route.abort("blockedbyclient");
      }
    });
    await context.routeWebSocket(/.*/, (ws) => {
      if (isLoopback(ws.url().replace(/^ws/, "http"))) {
        ws.connectToServer();
      } else {
        report.blocked.push(ws.url());
        ws.close();
      }
    });
    context.on("response", (response) => {
      const request = response.request();
      report.requests.push({ method: request.method(), url: request.url(), status: response.status() });
    });
    context.on("requestfailed", (request) => {
      report.failedRequests.push({ url: request.url(), error: request.failure()?.errorText ?? "" });
    });
    context.on("console", (message) => {
      if (message.type() === "error") report.consoleErrors.push(message.text());
    });
    context.on("weberror", (error) => report.pageErrors.push(String(error.error())));
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(30_000);
    await scenario({ context, page, report });
  } catch (error) {
    report.error = String(error?.stack ?? error);
    code = 1;
  } finally {
    await context?.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(report) + "\n");
  process.exitCode = code;
}

/** The text of a CodeMirror 5 editor (GraphiQL's editors) inside `locator`. */
export async function editorValue(locator) {
  return locator.locator(".CodeMirror").first().evaluate((element) => element.CodeMirror.getValue());
}

/** Replaces the text of the CodeMirror 5 editor inside `locator`, as pasting would. */
export async function setEditorValue(locator, text) {
  await locator.locator(".CodeMirror").first().evaluate((element, value) => {
    element.CodeMirror.setValue(value);
  }, text);
}
