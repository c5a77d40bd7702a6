// The H5 twin of the mini-program: a hash-routed page on the SDK. The first load carries the login and
// the QR page only; the replica (RxDB) and the pages on it are chunks imported once the QR shows.
import { type App, applyCare, loadCare, saveCare } from "./app";
import { loginPage } from "./login";
import { qrPage } from "./qr";
import { createSdk } from "./sdk";
import { errorText, h, mount } from "./ui";

const TABS: [string, string][] = [
  ["#/qr", "医保码"],
  ["#/records", "我的记录"],
  ["#/family", "我的家人"],
  ["#/filings", "我的办事"],
];

const base = document.querySelector<HTMLMetaElement>('meta[name="yibao-base"]')?.content ?? "";
const sdk = createSdk(location.origin + base);
const root = document.getElementById("app") as HTMLElement;
let cleanups: (() => void)[] = [];
let toastTimer: ReturnType<typeof setTimeout> | undefined;
/** Why the login page shows (a login that ended by itself), until the next login. */
let loginNotice: string | null = null;
let loggingOut = false;

const app: App = {
  sdk,
  me: null,
  online: navigator.onLine,
  care: false,
  root,
  render,
  navigate(hash) {
    if (location.hash === hash) render();
    else location.hash = hash;
  },
  toast(text) {
    document.querySelector(".toast")?.remove();
    const element = h("div", { class: "toast", role: "status" }, text);
    document.body.appendChild(element);
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => element.remove(), 4000);
  },
  onLeave(cleanup) {
    cleanups.push(cleanup);
  },
};

function leave(): void {
  for (const cleanup of cleanups) cleanup();
  cleanups = [];
}

function header(): HTMLElement {
  const me = app.me;
  const careButton = h(
    "button",
    {
      class: "secondary",
      id: "care-toggle",
      "aria-pressed": String(app.care),
      onclick: () => {
        app.care = !app.care;
        if (me) saveCare(me.id, app.care);
        applyCare(app.care);
        render();
      },
    },
    app.care ? "标准版" : "关怀模式（大字版）",
  );
  const logout = h(
    "button",
    {
      class: "secondary",
      id: "logout",
      onclick: () => void logOut(),
    },
    "退出",
  );
  return h(
    "header",
    { class: "top" },
    h("div", {}, h("h1", {}, "医保服务"), me ? h("div", { class: "who" }, `${me.name}，您好`) : null),
    me ? h("div", { class: "row" }, careButton, logout) : null,
  );
}

const closeReplicas = (): Promise<void> => import("./replica").then(({ closeReplicas }) => closeReplicas()).catch(() => {});

/** A logout leaves nothing of the person on this phone (a shared phone: the next login must find
 * none of it): the replica's database goes, with the cached links and the offline voucher's device key
 * and certificates. Only their care-mode choice stays. */
async function logOut(): Promise<void> {
  const me = app.me;
  loggingOut = true; // the session's end below is this logout, not a lost session
  try {
    // The session goes first (the server is told meanwhile): the other tabs hear of it and stop their
    // replicas before this one's stops and hands them the lead.
    const ending = sdk.logout().catch(() => {});
    const replica = await import("./replica").catch(() => null);
    await replica?.closeReplicas().catch(() => {});
    await ending;
    if (me) {
      await sdk.forgetPerson(me.id);
      // Offline without the chunk: the database stays until the next login of someone else removes it.
      await replica?.removeReplica(me.id).catch(() => {});
    }
  } finally {
    loggingOut = false;
  }
  app.me = null;
  applyCare(false);
  app.care = false;
  loginNotice = null;
  app.navigate("#/login");
}

/** The login ended without a logout (refresh refused: expired, revoked, logged out on another device or
 * tab). The replication stops at once and the login page says why. The person's data stays on the phone
 * for their next login (their replica, offline certificates); another person's login removes it. */
function sessionLost(notice: string): void {
  if (loggingOut) return;
  sdk.sessionEnded();
  void closeReplicas();
  app.me = null;
  loginNotice = notice;
  app.navigate("#/login");
}

function netBanner(): HTMLElement {
  return h(
    "div",
    { class: app.online ? "net hidden" : "net", id: "net-banner", role: "status" },
    "当前无网络：显示本机保存的数据，新的办事草稿会在联网后自动同步",
  );
}

function tabbar(current: string): HTMLElement {
  return h(
    "nav",
    { class: "tabbar" },
    TABS.map(([hash, label]) =>
      h("a", { href: hash, "aria-current": current === hash ? "page" : null }, label),
    ),
  );
}

async function render(): Promise<void> {
  leave();
  const [path, query] = (location.hash || "#/qr").split("?");
  const params = new URLSearchParams(query ?? "");
  if (!app.me) {
    const me = await sdk.currentUser(app.online);
    if (me) {
      app.me = me;
      app.care = loadCare(me.id);
      applyCare(app.care);
    }
  }
  if (!app.me || path === "#/login") {
    if (app.me && path === "#/login") return app.navigate("#/qr");
    const notice = loginNotice ? h("p", { class: "error", id: "login-notice", role: "alert" }, loginNotice) : null;
    mount(root, header(), netBanner(), notice, loginPage(app));
    return;
  }
  loginNotice = null;
  const page = h("section", { class: "page", id: `page-${path.slice(2) || "qr"}` });
  mount(root, header(), netBanner(), page, tabbar(path));
  try {
    switch (path) {
      case "#/records":
        await (await import("./records")).recordsPage(app, page, params);
        break;
      case "#/family":
        await (await import("./family")).familyPage(app, page);
        break;
      case "#/filings":
        await (await import("./filings")).filingsPage(app, page);
        break;
      default:
        await qrPage(app, page, params);
    }
  } catch (error) {
    if (sdk.isReloginError(error)) return sessionLost("登录已失效，请重新登录");
    page.appendChild(h("p", { class: "error", id: "page-error", role: "alert" }, `本页暂时无法显示：${errorText(error)}`));
    page.appendChild(h("button", { class: "secondary", id: "page-retry", onclick: () => void render() }, "重试"));
  }
}

function setOnline(online: boolean): void {
  if (app.online === online) return;
  app.online = online;
  document.getElementById("net-banner")?.classList.toggle("hidden", online);
  sdk.setOnline(online);
  // Drafts made offline go out as soon as the signal returns, whichever page is open.
  if (online && app.me) void import("./replica").then(async ({ replicaFor }) => (await replicaFor(sdk, app.me!.id)).reSync()).catch(() => {});
  window.dispatchEvent(new CustomEvent("yibao:network", { detail: online }));
}

// When the QR shows, fetch the other pages' chunks and the offline voucher in the background, so that
// they work when the signal goes later (the first load carries only the login and the QR).
window.addEventListener(
  "yibao:qr-shown",
  () => {
    void Promise.all([import("./records"), import("./family"), import("./filings")]).catch(() => {});
    // The replica starts syncing now, so that records and filings are on the phone before the signal goes.
    void import("./replica").then(({ replicaFor }) => (app.me ? replicaFor(sdk, app.me.id) : null)).catch(() => {});
  },
);
window.addEventListener("online", () => setOnline(true));
window.addEventListener("offline", () => setOnline(false));
window.addEventListener("hashchange", () => void render());
// Also heard from a replica's stream (the SDK's replication reports a login that ended where no page
// call sees it).
sdk.onSessionLost(() => sessionLost("登录已失效，请重新登录"));
// The page's other tabs share the login (localStorage): follow what they do to it.
window.addEventListener("storage", (event) => {
  if (event.storageArea !== localStorage) return;
  const ended = event.key === null || (event.key === sdk.keys.session && event.newValue === null);
  if (ended) {
    if (app.me) sessionLost("登录已结束（可能已在其他页面退出），请重新登录");
    return;
  }
  if (event.key === sdk.keys.session && !app.me) return void render(); // logged in in another tab
  if (event.key === sdk.keys.me && app.me && event.newValue) {
    let id: unknown;
    try {
      id = (JSON.parse(event.newValue) as { id?: unknown }).id;
    } catch {
      return;
    }
    if (id === app.me.id) return;
    // Another person logged in in another tab: nothing of the one shown here may stay on screen.
    void closeReplicas();
    app.me = null;
    void render();
  }
});
void render();
