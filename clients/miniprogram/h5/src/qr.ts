// 我的医保码: the online code from issueVoucher, refreshed before it expires; without network, the
// offline form composed on this phone with its device key and certificate. Past the certificate's
// validity the page says so instead of showing a code no clinic would accept.
import { renderSVG } from "uqr";

import type { App } from "./app";
import type { LinkSummary } from "./sdk";
import { errorText, h, localTime, mount } from "./ui";

const REFRESH_MARGIN_MS = 10_000; // refresh this long before the code expires
const OFFLINE_LIFETIME_MS = 60_000; // SPEC section 5: an offline code lives 60 s

function svgImage(svg: string, alt: string): HTMLImageElement {
  return h("img", { src: `data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`, alt, id: "qr-image" });
}

export async function qrPage(app: App, page: HTMLElement, params: URLSearchParams): Promise<void> {
  const linkId = params.get("link");
  // The code is asked for at once, beside the links (one round trip, not two, on a slow network).
  const prefetched = linkId ? null : app.sdk.takePrefetched(); // asked for during the login
  const first = prefetched?.voucher ?? (app.online ? app.sdk.issueVoucher(linkId) : null);
  first?.catch(() => {}); // awaited in show()
  let linksKnown = true;
  const links = await app.sdk.familyLinks(app.online, false, prefetched?.links).catch(() => ((linksKnown = false), [] as LinkSummary[]));
  const canShow = (candidate: LinkSummary): boolean => candidate.myRole === "holder" && candidate.status === "ACTIVE" && candidate.permissions.includes("SHOW_VOUCHER");
  const link = linkId ? links.find((candidate) => candidate.id === linkId) : undefined;
  if (linkId && linksKnown && !(link && canShow(link))) {
    // An ended link (or one that no longer lets me show the code): no code, and no stale one either.
    mount(
      page,
      h("h2", {}, "家人的医保码"),
      h("div", { class: "qr card", id: "qr-box" }, h("div", { class: "dead", id: "qr-dead", role: "alert" }, "与这位家人的关联已解除，或TA没有授权您出示医保码。")),
      h("button", { class: "secondary", onclick: () => app.navigate("#/qr") }, "返回我的医保码"),
    );
    return;
  }
  const whose = link ? `${link.relativeName}（${link.relationshipLabel}）的医保码` : "我的医保码";
  const box = h("div", { class: "qr card", id: "qr-box", "aria-live": "polite" }, h("p", { class: "loading" }, "正在生成医保码…"));
  const showable = links.filter(canShow);
  mount(
    page,
    h("h2", {}, whose),
    box,
    h("p", { class: "muted hide-in-care" }, "出示给医院或药店扫码；请勿截图转发给他人。"),
    linkId ? h("button", { class: "secondary", onclick: () => app.navigate("#/qr") }, "返回我的医保码") : null,
    // Care mode: a relative's code is one tap away from here (no detour through 我的家人).
    !linkId && showable.length
      ? h(
          "div",
          { class: "stack care-only" },
          showable.map((candidate) =>
            h("button", { "data-relative-qr": candidate.id, onclick: () => app.navigate(`#/qr?link=${candidate.id}`) }, `显示${candidate.relativeName}的医保码`),
          ),
        )
      : null,
  );

  let timer: ReturnType<typeof setTimeout> | undefined;
  let ticker: ReturnType<typeof setInterval> | undefined;
  let gone = false;
  let firstPending = first;
  const clear = (): void => {
    clearTimeout(timer);
    clearInterval(ticker);
  };
  const schedule = (expiresAtMs: number, label: HTMLElement): void => {
    clear();
    const due = Math.max(3_000, expiresAtMs - Date.now() - REFRESH_MARGIN_MS);
    timer = setTimeout(() => void show(), due);
    const tick = (): void => {
      label.textContent = `${Math.max(0, Math.round((expiresAtMs - Date.now()) / 1000))} 秒内有效，到期前自动刷新`;
    };
    tick();
    ticker = setInterval(tick, 1000);
  };

  const showOffline = async (why: string): Promise<void> => {
    const result = await app.sdk.offlineCode(linkId ?? null);
    if (gone) return;
    if (result.state === "ok") {
      const label = h("p", { class: "muted", id: "qr-countdown" });
      mount(
        box,
        h("p", { class: "kind", id: "qr-kind", "data-form": "offline" }, "离线码（无网络时由本机生成）"),
        svgImage(renderSVG(result.code, { ecc: "M", border: 2 }), "离线医保码"),
        label,
        h("p", { class: "muted" }, why),
      );
      schedule(Date.now() + OFFLINE_LIFETIME_MS, label);
      box.dataset.code = result.code;
      return;
    }
    box.dataset.code = "";
    const text =
      result.state === "expired"
        ? `本机离线码已于 ${localTime(result.notAfter)} 过期：离线时间超过了离线码的有效期，请连接网络后刷新。`
        : result.state === "none"
          ? "本机尚未开通离线码，请连接网络后打开本页一次。"
          : result.message;
    mount(
      box,
      h("p", { class: "kind", id: "qr-kind", "data-form": result.state === "expired" ? "expired" : "none" }, "暂时无法显示医保码"),
      h("div", { class: "dead", id: "qr-dead", role: "alert" }, text),
    );
  };

  const show = async (): Promise<void> => {
    if (gone) return;
    if (!app.online) return showOffline("无网络，已切换为离线码，诊所终端离线也可核验。");
    try {
      const pending = firstPending ?? app.sdk.issueVoucher(linkId);
      firstPending = null;
      const voucher = await pending;
      if (gone) return;
      const label = h("p", { class: "muted", id: "qr-countdown" });
      mount(
        box,
        h("p", { class: "kind", id: "qr-kind", "data-form": "online" }, "在线码"),
        svgImage(renderSVG(voucher.code, { ecc: "M", border: 2 }), "医保码"),
        label,
      );
      box.dataset.code = voucher.code;
      schedule(Date.parse(voucher.expiresAt), label);
      window.dispatchEvent(new CustomEvent("yibao:qr-shown"));
      // Keep the offline form ready for when the signal goes (certify this phone's key if needed).
      void app.sdk.ensureDeviceCertificate(linkId).catch(() => {});
    } catch (error) {
      if (app.sdk.isReloginError(error)) throw error;
      if (app.sdk.isNetworkError(error)) return showOffline("网络不好，已切换为离线码。");
      clear();
      mount(box, h("p", { class: "error", role: "alert" }, `无法生成医保码：${errorText(error)}`));
    }
  };
  const onNetwork = (): void => void show();
  window.addEventListener("yibao:network", onNetwork);
  app.onLeave(() => {
    gone = true;
    clear();
    window.removeEventListener("yibao:network", onNetwork);
  });
  await show();
}
