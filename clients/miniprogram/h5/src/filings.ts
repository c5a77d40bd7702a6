// 我的办事: a new filing (异地就医备案) kept as a draft on the phone first, so it can be made without
// signal and is sent when the signal returns; then the material attached (the REST attachment endpoint),
// the filing submitted, and its status followed live (the notification subscription over graphql-ws).
import { createClient, type Client } from "graphql-ws";

import type * as T from "../../src/types";

import type { App } from "./app";
import { type Draft, replicaFor } from "./replica";
import { errorText, h, localTime, mount } from "./ui";

const TYPES: [string, string, string | null][] = [
  ["long_term_residence", "异地长期居住", "residence_proof"],
  ["temporary_trip", "临时外出就医", null],
  ["referral", "转诊转院", "referral_letter"],
];
const NOTIFICATION = `subscription { notificationAdded { id kind title body data createdAt } }`;

function chinaDate(offsetDays: number): string {
  return new Date(Date.now() + 8 * 3600_000 + offsetDays * 86_400_000).toISOString().slice(0, 10);
}

let live: Client | null = null;
const liveListeners = new Set<(notification: T.Notification) => void>();

/** One subscription per page load, shared by every visit to this page. */
function followLive(app: App): void {
  if (live) return;
  const base = app.sdk.baseUrl.replace(/^http/, "ws");
  live = createClient({
    url: `${base}/graphql`,
    lazy: false,
    retryAttempts: Infinity,
    shouldRetry: () => true,
    connectionParams: async () => ({ Authorization: `Bearer ${await app.sdk.accessToken()}` }),
  });
  const subscribe = (): void => {
    live!.subscribe<{ notificationAdded: T.Notification }>(
      { query: NOTIFICATION },
      {
        next: (result) => {
          const notification = result.data?.notificationAdded;
          if (notification) for (const listener of liveListeners) listener(notification);
        },
        error: () => setTimeout(subscribe, 2000), // an expired token ends it: subscribe again (fresh token)
        complete: () => setTimeout(subscribe, 2000),
      },
    );
  };
  subscribe();
}

async function upload(app: App, filingId: string, material: string, file: File): Promise<void> {
  const form = new FormData();
  form.append("file", file, file.name);
  const url = `${app.sdk.baseUrl}/filings/${encodeURIComponent(filingId)}/attachments?material=${encodeURIComponent(material)}`;
  for (let attempt = 0; ; attempt++) {
    const token = await app.sdk.accessToken();
    const response = await fetch(url, { method: "POST", headers: { authorization: `Bearer ${token}` }, body: form });
    if (response.ok) return;
    const body = (await response.json().catch(() => ({}))) as { error?: { message?: string; code?: string } };
    if (response.status === 401 && attempt === 0) {
      await app.sdk.client.refresh(token); // the token expired on the way: refresh once, send again
      continue;
    }
    throw new Error(body.error?.message ?? `上传失败（${response.status}）`);
  }
}

function draftItem(draft: Draft & { error?: string }): HTMLElement {
  return h(
    "div",
    { class: "card", "data-client-id": draft.clientId, "data-status": "LOCAL" },
    h("div", { class: "row" }, h("strong", {}, "异地就医备案"), h("span", { class: "badge pending" }, "待同步")),
    h("p", { class: "muted" }, `${localTime(draft.createdAt)} 在本机保存，联网后自动提交到医保系统`),
    draft.error ? h("p", { class: "error" }, draft.error) : null,
  );
}

function filingItem(app: App, filing: T.Filing, reload: () => void): HTMLElement {
  const attached = new Set(filing.attachments.map((a) => a.material));
  const missing = filing.requiredMaterials.filter((m) => !attached.has(m.code));
  const actions: (HTMLElement | null)[] = [];
  if (filing.status === "DRAFT") {
    for (const material of missing) {
      const input = h("input", { type: "file", accept: "image/*,application/pdf", "data-material": material.code });
      const button = h("button", { class: "secondary", "data-action": "upload", disabled: !app.online }, `上传${material.label}`);
      button.addEventListener("click", async () => {
        const file = input.files?.[0];
        if (!file) return app.toast("请先选择文件");
        button.disabled = true;
        try {
          await upload(app, filing.id, material.code, file);
          app.toast("材料已上传");
          reload();
        } catch (error) {
          app.toast(errorText(error));
          button.disabled = false;
        }
      });
      actions.push(h("div", { class: "stack" }, h("label", {}, material.label), input, button));
    }
    const submit = h("button", { "data-action": "submit", disabled: !app.online || missing.length > 0 }, "提交申请");
    submit.addEventListener("click", async () => {
      submit.disabled = true;
      try {
        await app.sdk.client.submitFiling(filing.id);
        app.toast("已提交，审核结果会在这里更新");
        reload();
      } catch (error) {
        app.toast(errorText(error));
        submit.disabled = false;
      }
    });
    actions.push(submit);
  }
  return h(
    "div",
    { class: "card", "data-filing": filing.id, "data-client-id": filing.clientId, "data-status": filing.status },
    h("div", { class: "row" }, h("strong", {}, filing.kindLabel), h("span", { class: "badge", "data-role": "status" }, filing.statusLabel)),
    h("p", { class: "muted" }, `${filing.personName} · ${localTime(filing.createdAt)}${filing.stageLabel ? ` · ${filing.stageLabel}` : ""}`),
    filing.attachments.length ? h("p", { class: "muted" }, `已上传：${filing.attachments.map((a) => a.materialLabel).join("、")}`) : null,
    filing.decisionReason ? h("p", {}, `审核意见：${filing.decisionReason}`) : null,
    actions,
  );
}

function createForm(app: App, onCreated: () => void): HTMLElement {
  const type = h("select", { id: "filing-type" }, TYPES.map(([code, label]) => h("option", { value: code }, label)));
  const region = h("input", { id: "filing-region", value: "310115", maxlength: 6, inputmode: "numeric" });
  const start = h("input", { id: "filing-start", type: "date", value: chinaDate(0) });
  const end = h("input", { id: "filing-end", type: "date", value: chinaDate(364) });
  const reason = h("input", { id: "filing-reason", value: "随子女在外地长期居住", maxlength: 200 });
  const save = h("button", { id: "filing-save" }, "保存草稿");
  save.addEventListener("click", () => {
    const replica = replicaFor(app.sdk, app.me!.id);
    replica.addDraft(
      "CROSS_REGION",
      { registrationType: type.value, destinationRegion: region.value.trim(), startOn: start.value, endOn: end.value, reason: reason.value.trim() },
      null,
    );
    app.toast(app.online ? "草稿已保存" : "草稿已保存在本机，联网后自动同步");
    onCreated();
  });
  return h(
    "div",
    { class: "card", id: "filing-form" },
    h("h3", {}, "新办：异地就医备案"),
    h("label", { for: "filing-type" }, "备案类型"),
    type,
    h("label", { for: "filing-region" }, "就医地行政区划代码（如上海浦东 310115）"),
    region,
    // Care mode: the dates keep their defaults (today, for a year): fewer things to fill in.
    h("div", { class: "hide-in-care" }, h("label", { for: "filing-start" }, "开始日期"), start, h("label", { for: "filing-end" }, "结束日期"), end),
    h("label", { for: "filing-reason" }, "备案原因"),
    reason,
    h("div", { class: "row" }, save),
  );
}

export async function filingsPage(app: App, page: HTMLElement): Promise<void> {
  const replica = replicaFor(app.sdk, app.me!.id);
  const list = h("div", { id: "filings" });
  let rendering = false;
  const renderList = async (): Promise<void> => {
    if (rendering) return;
    rendering = true;
    try {
      const filings = await replica.filings(app.online);
      const drafts = replica.drafts() as (Draft & { error?: string })[];
      const pending = drafts.filter((draft) => !filings.some((filing) => filing.clientId === draft.clientId));
      mount(
        list,
        pending.map(draftItem),
        filings.map((filing) => filingItem(app, filing, () => void renderList())),
        pending.length || filings.length ? null : h("p", { class: "muted" }, "还没有办理记录"),
      );
    } catch (error) {
      if (app.sdk.isReloginError(error)) throw error;
      mount(list, h("p", { class: "error" }, errorText(error)));
    } finally {
      rendering = false;
    }
  };
  mount(page, h("h2", {}, "我的办事"), createForm(app, () => void renderList()), h("h3", {}, "办理进度"), list);
  const onNetwork = (): void => void renderList();
  const onNotification = (notification: T.Notification): void => {
    if (!notification.kind.startsWith("filing")) return;
    app.toast(notification.title);
    void renderList();
  };
  window.addEventListener("yibao:network", onNetwork);
  liveListeners.add(onNotification);
  app.onLeave(() => {
    window.removeEventListener("yibao:network", onNetwork);
    liveListeners.delete(onNotification);
  });
  if (app.online) followLive(app);
  await renderList();
}
