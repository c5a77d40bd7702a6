// The H5 twin of the mini-program: a hash-routed page on the SDK. The first load carries the login and
// the QR page only; the replica (RxDB) and the pages on it are chunks imported once the QR shows.
import { type App, applyCare, loadCare, saveCare } from "./app";
import { loginPage } from "./login";
import { qrPage } from "./qr";
import { createSdk } from "./sdk";
import { h, mount } from "./ui";

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
      onclick: async () => {
        await import("./replica").then(({ closeReplicas }) => closeReplicas()).catch(() => {});
        await sdk.logout();
        app.me = null;
        applyCare(false);
        app.care = false;
        app.navigate("#/login");
      },
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
    mount(root, header(), netBanner(), loginPage(app));
    return;
  }
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
    if (sdk.isReloginError(error)) {
      app.me = null;
      app.toast("登录已过期，请重新登录");
      app.navigate("#/login");
      return;
    }
    page.appendChild(h("p", { class: "error" }, String((error as Error)?.message ?? error)));
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
sdk.onSessionLost(() => {
  app.me = null;
  app.navigate("#/login");
});
void render();
