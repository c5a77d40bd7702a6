// 我的家人: my links (as holder or relative), asking to link a relative, confirming a request, and a
// relative's QR and records (within the link's permissions).
import type * as T from "../../src/types";

import type { App } from "./app";
import { errorText, h, mount } from "./ui";

const RELATIONSHIPS: [T.FamilyRelationship, string][] = [
  ["SPOUSE", "配偶"],
  ["PARENT", "父母"],
  ["CHILD", "子女"],
  ["GUARDIAN", "监护"],
];
const PERMISSIONS: [T.LinkPermission, string][] = [
  ["SHOW_VOUCHER", "出示医保码"],
  ["READ_RECORDS", "查看记录"],
  ["FILE_ON_BEHALF", "代为办事"],
];
const STATUS: Partial<Record<T.FamilyLinkStatus, string>> = { PENDING: "待确认", ACTIVE: "已关联" };

function linkItem(app: App, link: T.FamilyLink, reload: () => void): HTMLElement {
  const granted = PERMISSIONS.filter(([code]) => link.permissions.includes(code)).map(([, label]) => label);
  const actions: HTMLElement[] = [];
  let confirmBox: HTMLElement | null = null;
  const fail = (error: unknown) => app.toast(errorText(error));
  if (link.myRole === "holder" && link.status === "ACTIVE") {
    if (link.permissions.includes("SHOW_VOUCHER"))
      actions.push(h("button", { "data-action": "relative-qr", onclick: () => app.navigate(`#/qr?link=${link.id}`) }, "出示TA的医保码"));
    if (link.permissions.includes("READ_RECORDS"))
      actions.push(h("button", { class: "secondary", "data-action": "relative-records", onclick: () => app.navigate(`#/records?link=${link.id}`) }, "查看TA的记录"));
  }
  if (link.status === "ACTIVE") {
    // Two steps: a tap on 解除关联 only asks; the link ends on 确认解除 (at once, on both phones).
    const confirm = h("div", { class: "confirm hidden", "data-role": "end-link-confirm", role: "alertdialog" });
    const ask = h("button", { class: "secondary danger", "data-action": "end-link", disabled: !app.online }, "解除关联");
    const who = link.myRole === "holder" ? link.relativeName : link.holderName;
    const consequence =
      link.myRole === "holder"
        ? "解除后将不能再出示TA的医保码、查看TA的记录或代TA办事，本机保存的TA的离线码也会删除。"
        : "解除后TA将不能再出示您的医保码、查看您的记录或代您办事。";
    const close = (): void => {
      confirm.classList.add("hidden");
      ask.hidden = false;
    };
    const yes = h("button", { class: "danger", "data-action": "end-link-confirm", disabled: !app.online }, "确认解除");
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      try {
        await app.sdk.unlinkFamily(app.me!.id, link.id);
        app.toast(`已解除与${who}的关联`);
        reload();
      } catch (error) {
        yes.disabled = false;
        fail(error);
      }
    });
    mount(
      confirm,
      h("p", {}, `确定解除与${who}的关联吗？${consequence}`),
      h("div", { class: "row" }, yes, h("button", { class: "secondary", "data-action": "end-link-cancel", onclick: close }, "取消")),
    );
    ask.addEventListener("click", () => {
      confirm.classList.remove("hidden");
      ask.hidden = true;
    });
    actions.push(ask);
    confirmBox = confirm;
  }
  if (link.myRole === "relative" && link.status === "PENDING") {
    const respond = (accept: boolean) => async () => {
      try {
        await app.sdk.client.respondFamilyLink(link.id, accept);
        app.toast(accept ? "已同意关联" : "已拒绝");
        reload();
      } catch (error) {
        fail(error);
      }
    };
    actions.push(h("button", { "data-action": "accept", disabled: !app.online, onclick: respond(true) }, "同意"));
    actions.push(h("button", { class: "secondary", "data-action": "decline", disabled: !app.online, onclick: respond(false) }, "拒绝"));
  }
  const title =
    link.myRole === "holder"
      ? `${link.relativeName}（${link.relationshipLabel}）`
      : link.status === "PENDING"
        ? `${link.holderName} 请求关联您，可${link.requestedPermissions.map((p) => PERMISSIONS.find(([c]) => c === p)?.[1]).join("、")}`
        : `${link.holderName} 可代您办理`;
  return h(
    "div",
    { class: "card", "data-link": link.id, "data-status": link.status, "data-role": link.myRole },
    h("div", { class: "row" }, h("strong", {}, title), h("span", { class: link.status === "ACTIVE" ? "badge" : "badge pending" }, STATUS[link.status] ?? link.status)),
    link.status === "ACTIVE" ? h("p", { class: "muted" }, `权限：${granted.join("、") || "无"}`) : null,
    link.myRole === "holder" && link.status === "PENDING" ? h("p", { class: "muted" }, "等待对方在自己的手机上确认") : null,
    actions.length ? h("div", { class: "row" }, actions) : null,
    confirmBox,
  );
}

function requestForm(app: App, reload: () => void): HTMLElement {
  const relationship = h("select", { id: "link-relationship" }, RELATIONSHIPS.map(([code, label]) => h("option", { value: code }, label)));
  const name = h("input", { id: "link-name", autocomplete: "off", maxlength: 50 });
  const idNumber = h("input", { id: "link-id-number", autocomplete: "off", maxlength: 18, inputmode: "text" });
  const boxes = PERMISSIONS.map(([code, label]) => {
    const box = h("input", { type: "checkbox", value: code, checked: true, "data-permission": code });
    return { box, row: h("label", { class: "check" }, box, label) };
  });
  const status = h("p", { class: "muted", id: "link-status", role: "status" });
  const submit = h("button", { id: "link-submit", disabled: !app.online }, "发送关联请求");
  submit.addEventListener("click", async () => {
    submit.disabled = true;
    status.textContent = "正在发送…";
    try {
      await app.sdk.client.requestFamilyLink({
        relationship: relationship.value as T.FamilyRelationship,
        name: name.value.trim(),
        idNumber: idNumber.value.trim(),
        permissions: boxes.filter(({ box }) => box.checked).map(({ box }) => box.value as T.LinkPermission),
      });
      status.textContent = "已发送，等待对方确认";
      status.className = "ok";
      reload();
    } catch (error) {
      status.textContent = errorText(error);
      status.className = "error";
      submit.disabled = false;
    }
  });
  return h(
    "div",
    { class: "card", id: "link-form" },
    h("h3", {}, "关联家人"),
    h("label", { for: "link-relationship" }, "TA是我的"),
    relationship,
    h("label", { for: "link-name" }, "TA的姓名"),
    name,
    h("label", { for: "link-id-number" }, "TA的身份证号"),
    idNumber,
    // Care mode asks for everything at once (the default), without the choices.
    h("div", { class: "hide-in-care" }, h("label", {}, "请求的权限"), boxes.map(({ row }) => row)),
    h("div", { class: "row" }, submit),
    app.online ? null : h("p", { class: "muted" }, "关联家人需要联网"),
    status,
  );
}

export async function familyPage(app: App, page: HTMLElement): Promise<void> {
  const reload = (): void => void familyPage(app, page);
  const links = await app.sdk.familyLinks(app.online);
  mount(
    page,
    h("h2", {}, "我的家人"),
    h("div", { id: "links" }, links.length ? links.map((link) => linkItem(app, link, reload)) : h("p", { class: "muted" }, "还没有关联的家人")),
    requestForm(app, reload),
  );
}
