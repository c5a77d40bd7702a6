// Login with the demo identity provider: a picker of the demo residents (a mini-program gets its code
// from wx.login instead; the SDK's login takes either).
import type { App } from "./app";
import { applyCare, loadCare } from "./app";
import { errorText, h } from "./ui";

const DEMO_LOGINS: [string, string, string][] = [
  ["resident", "居民（本人）", "46岁，职工医保，三年记录，已关联父亲"],
  ["elder", "老人（父亲）", "79岁，城乡居民医保，由女儿代办"],
  ["spouse", "配偶（丈夫）", "职工医保，尚未关联家人"],
  ["stranger", "其他居民", "与以上家庭无关"],
];

export function loginPage(app: App): HTMLElement {
  const status = h("p", { class: "muted", id: "login-status", role: "status" });
  const buttons = DEMO_LOGINS.map(([code, title, desc]) =>
    h(
      "button",
      {
        class: "secondary",
        "data-login": code,
        onclick: async () => {
          for (const button of buttons) button.disabled = true;
          status.textContent = "正在登录…";
          try {
            const me = await app.sdk.login(code);
            app.me = me;
            app.care = loadCare(me.id);
            applyCare(app.care);
            app.navigate("#/qr");
          } catch (error) {
            status.textContent = `登录失败：${errorText(error)}`;
            status.className = "error";
            for (const button of buttons) button.disabled = false;
          }
        },
      },
      title,
      h("span", { class: "desc" }, desc),
    ),
  );
  return h(
    "section",
    { class: "page", id: "page-login" },
    h("h2", {}, "登录"),
    h("p", { class: "muted" }, "演示环境：请选择一位演示居民登录"),
    h("div", { class: "login-list card" }, buttons),
    status,
  );
}
