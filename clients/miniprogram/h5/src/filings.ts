// 我的办事: a new filing (异地就医备案) is a draft in the local replica first, so it can be made without
// signal; RxDB pushes it when the signal returns and the server's master (its id, its version) comes
// back. Then the material is attached (the REST attachment endpoint of api/filings), the filing
// submitted, and its status followed live: the replica's stream (streamFiling, streamNotification over
// graphql-ws) brings every change the reviewers make.
import type * as T from "../../src/types";

import type { App } from "./app";
import { type Doc, replicaFor } from "./replica";
import { errorText, h, localTime, mount } from "./ui";

const TYPES: [string, string][] = [
  ["long_term_residence", "异地长期居住"],
  ["temporary_trip", "临时外出就医"],
  ["referral", "转诊转院"],
];

const UPLOAD_TIMEOUT_MS = 120_000;

function chinaDate(offsetDays: number): string {
  return new Date(Date.now() + 8 * 3600_000 + offsetDays * 86_400_000).toISOString().slice(0, 10);
}

async function upload(app: App, filingId: string, material: string, file: File): Promise<void> {
  const form = new FormData();
  form.append("file", file, file.name);
  const url = `${app.sdk.baseUrl}/filings/${encodeURIComponent(filingId)}/attachments?material=${encodeURIComponent(material)}`;
  for (let attempt = 0; ; attempt++) {
    const token = await app.sdk.accessToken();
    // Bounded, and never sent again by itself: a timed-out upload may have landed, and the resident
    // sees what the draft holds (已上传) before choosing to send the file again.
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), UPLOAD_TIMEOUT_MS);
    let response: Response;
    try {
      response = await fetch(url, { method: "POST", headers: { authorization: `Bearer ${token}` }, body: form, signal: controller.signal });
    } catch (error) {
      throw new Error(controller.signal.aborted ? "上传超时，请检查网络后重试" : "网络不可用，请稍后再试", { cause: error });
    } finally {
      clearTimeout(timer);
    }
    if (response.ok) return;
    const body = (await response.json().catch(() => ({}))) as { error?: { message?: string } };
    if (response.status === 401 && attempt === 0) {
      await app.sdk.client.refresh(token); // the token expired on the way: refresh once, send again
      continue;
    }
    throw new Error(body.error?.message ?? `上传失败（${response.status}）`);
  }
}

type Materials = Pick<T.Filing, "requiredMaterials" | "attachments">;
const materialsCache = new Map<string, Promise<Materials>>();

/** What a draft must carry and what it has: asked of the server (attachments live there only). */
function materials(app: App, doc: Doc): Promise<Materials> {
  const key = `${doc.serverId}@${doc.version}`;
  let pending = materialsCache.get(key);
  if (!pending) {
    pending = app.sdk.client.filing(String(doc.serverId));
    pending.catch(() => materialsCache.delete(key));
    materialsCache.set(key, pending);
  }
  return pending;
}

function localItem(app: App, doc: Doc, refusal: string | undefined, whom: HTMLElement | null): HTMLElement {
  if (refusal === undefined) {
    return h(
      "div",
      { class: "card", "data-client-id": doc.id, "data-status": "LOCAL" },
      h("div", { class: "row" }, h("strong", {}, String(doc.kindLabel ?? "")), h("span", { class: "badge pending" }, "待同步")),
      whom,
      h("p", { class: "muted" }, `${localTime(String(doc.createdAt))} 在本机保存，联网后自动提交到医保系统`),
    );
  }
  // The server refused it for good: it is not sent again; the resident discards it and fills in anew.
  const discard = h("button", { class: "secondary danger", "data-action": "discard" }, "删除此草稿");
  discard.addEventListener("click", async () => {
    discard.disabled = true;
    try {
      await (await replicaFor(app.sdk, app.me!.id)).discardLocal(doc.id);
      app.sdk.setRefusal(app.me!.id, doc.id, null);
      app.toast("草稿已删除");
    } catch (error) {
      discard.disabled = false;
      app.toast(errorText(error));
    }
  });
  return h(
    "div",
    { class: "card", "data-client-id": doc.id, "data-status": "REFUSED" },
    h("div", { class: "row" }, h("strong", {}, String(doc.kindLabel ?? "")), h("span", { class: "badge pending" }, "未能提交")),
    whom,
    h("p", { class: "error", "data-role": "refusal", role: "alert" }, `医保系统未接收这份草稿：${refusal}`),
    h("p", { class: "muted" }, "请删除后按正确内容重新填写。"),
    discard,
  );
}

/** Whose filing it is, when not mine: a relative's (file_on_behalf) are in the same list. */
function forWhom(app: App, doc: Doc, names: Map<string, string>): HTMLElement | null {
  if (doc.personId === app.me!.id) return null;
  return h("p", { class: "muted", "data-role": "for" }, `为${names.get(doc.personId) ?? "家人"}办理`);
}

function filingItem(app: App, doc: Doc, redraw: () => void, whom: HTMLElement | null): HTMLElement {
  const serverId = String(doc.serverId);
  const status = String(doc.status).toUpperCase();
  const actions = h("div", { class: "stack" });
  if (status === "DRAFT") {
    void (async () => {
      if (!app.online) return mount(actions, h("p", { class: "muted" }, "联网后可上传材料并提交"));
      let info: Materials;
      try {
        info = await materials(app, doc);
      } catch (error) {
        return mount(actions, h("p", { class: "error" }, errorText(error)));
      }
      const attached = new Set(info.attachments.map((a) => a.material));
      const missing = info.requiredMaterials.filter((m) => !attached.has(m.code));
      const parts: HTMLElement[] = [];
      if (info.attachments.length) parts.push(h("p", { class: "muted" }, `已上传：${info.attachments.map((a) => a.materialLabel).join("、")}`));
      for (const material of missing) {
        const input = h("input", { type: "file", accept: "image/*,application/pdf", "data-material": material.code });
        const button = h("button", { class: "secondary", "data-action": "upload" }, `上传${material.label}`);
        button.addEventListener("click", async () => {
          const file = input.files?.[0];
          if (!file) return app.toast("请先选择文件");
          button.disabled = true;
          try {
            await upload(app, serverId, material.code, file);
            materialsCache.delete(`${doc.serverId}@${doc.version}`);
            app.toast("材料已上传");
            redraw();
          } catch (error) {
            app.toast(errorText(error));
            materialsCache.delete(`${doc.serverId}@${doc.version}`); // it may have landed: ask again
            redraw();
          }
        });
        parts.push(h("div", { class: "stack" }, h("label", {}, material.label), input, button));
      }
      const submit = h("button", { "data-action": "submit", disabled: missing.length > 0 }, "提交申请");
      submit.addEventListener("click", async () => {
        submit.disabled = true;
        try {
          await app.sdk.client.submitFiling(serverId);
          app.toast("已提交，审核进度会在这里实时更新");
        } catch (error) {
          app.toast(errorText(error));
          submit.disabled = false;
        }
      });
      parts.push(submit);
      mount(actions, parts);
    })();
  }
  return h(
    "div",
    { class: "card", "data-filing": serverId, "data-client-id": doc.id, "data-status": status },
    h("div", { class: "row" }, h("strong", {}, String(doc.kindLabel ?? "")), h("span", { class: "badge", "data-role": "status" }, String(doc.statusLabel ?? status))),
    whom,
    h("p", { class: "muted" }, `${localTime(String(doc.createdAt))}${doc.submittedAt ? ` 提交` : ""}${doc.dueOn ? ` · 办结期限 ${String(doc.dueOn)}` : ""}`),
    doc.decisionReason ? h("p", {}, `审核意见：${String(doc.decisionReason)}`) : null,
    actions,
  );
}

function createForm(app: App): HTMLElement {
  const type = h("select", { id: "filing-type" }, TYPES.map(([code, label]) => h("option", { value: code }, label)));
  const region = h("input", { id: "filing-region", value: "310115", maxlength: 6, inputmode: "numeric" });
  const start = h("input", { id: "filing-start", type: "date", value: chinaDate(0) });
  const end = h("input", { id: "filing-end", type: "date", value: chinaDate(364) });
  const reason = h("input", { id: "filing-reason", value: "随子女在外地长期居住", maxlength: 200 });
  const hospital = h("input", { id: "filing-hospital", maxlength: 100 });
  const save = h("button", { id: "filing-save" }, "保存草稿");
  save.addEventListener("click", async () => {
    save.disabled = true;
    try {
      const replica = await replicaFor(app.sdk, app.me!.id);
      await replica.addDraft(
        "cross_region",
        "异地就医备案",
        {
          registrationType: type.value,
          destinationRegion: region.value.trim(),
          startOn: start.value,
          endOn: end.value,
          reason: reason.value.trim(),
          ...(hospital.value.trim() ? { hospital: hospital.value.trim() } : {}),
        },
        app.me!.id,
        null,
      );
      app.toast(app.online ? "草稿已保存" : "草稿已保存在本机，联网后自动同步");
    } catch (error) {
      app.toast(errorText(error));
    } finally {
      save.disabled = false;
    }
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
    // A referral (转诊转院) names the hospital it goes to; the server refuses one without.
    h("label", { for: "filing-hospital" }, "转入医院（转诊转院时填写）"),
    hospital,
    h("div", { class: "row" }, save),
  );
}

export async function filingsPage(app: App, page: HTMLElement): Promise<void> {
  const list = h("div", { id: "filings" }, h("p", { class: "loading" }, "正在读取…"));
  mount(page, h("h2", {}, "我的办事"), createForm(app), h("h3", {}, "办理进度"), list);
  const replica = await replicaFor(app.sdk, app.me!.id);
  const openedAt = new Date().toISOString();
  const seen = new Set<string>();
  let gone = false;
  const draw = async (): Promise<void> => {
    const [filings, notifications, links] = await Promise.all([replica.filings(), replica.notifications(), replica.familyLinks()]);
    const names = new Map(links.filter((link) => link.myRole === "holder").map((link) => [String(link.relativePersonId), String(link.relativeName)]));
    if (gone) return;
    // What the reviewers did, as it arrives (the notifications stream), in a toast.
    for (const note of notifications) {
      if (seen.has(note.id)) continue;
      seen.add(note.id);
      if (String(note.createdAt) > openedAt && String(note.kind).startsWith("filing")) app.toast(String(note.title));
    }
    const refusals = app.sdk.refusals(app.me!.id);
    mount(
      list,
      filings.map((doc) =>
        doc.serverId
          ? filingItem(app, doc, () => void draw(), forWhom(app, doc, names))
          : localItem(app, doc, refusals[doc.id], forWhom(app, doc, names)),
      ),
      filings.length ? null : h("p", { class: "muted" }, "还没有办理记录"),
    );
  };
  const stop = replica.watch(["filings", "notifications", "familylinks"], () => void draw());
  // A refusal is heard by the tab that replicates (this one, or another: the storage event).
  const onRefused = (): void => void draw();
  const onStorage = (event: StorageEvent): void => {
    if (event.key?.startsWith("yibao.h5.refused.")) void draw();
  };
  window.addEventListener("yibao:refused", onRefused);
  window.addEventListener("storage", onStorage);
  app.onLeave(() => {
    gone = true;
    stop();
    window.removeEventListener("yibao:refused", onRefused);
    window.removeEventListener("storage", onStorage);
  });
  await draw();
}
