// 我的记录: settlements, contributions and personal-account flows from the local replica (fresh from
// the server when online), mine or a linked relative's (?link=ID, read-records permission).
import type { App } from "./app";
import { replicaFor } from "./replica";
import { h, localDate, localTime, mount, yuan } from "./ui";

type Tab = "settlements" | "contributions" | "flows";

export async function recordsPage(app: App, page: HTMLElement, params: URLSearchParams): Promise<void> {
  const linkId = params.get("link");
  const replica = replicaFor(app.sdk, app.me!.id);
  const links = linkId ? await app.sdk.familyLinks(app.online) : [];
  const link = links.find((candidate) => candidate.id === linkId);
  mount(page, h("h2", {}, link ? `${link.relativeName}的记录` : "我的记录"), h("p", { class: "loading" }, "正在读取…"));
  const records = await replica.records(linkId, app.online);
  if (!records) {
    mount(page, h("h2", {}, "我的记录"), h("p", { class: "muted" }, "本机还没有保存记录，请连接网络后再打开。"));
    return;
  }
  const settlements = h(
    "div",
    { class: "card", id: "settlements" },
    h("h3", {}, "就医结算"),
    records.settlements.length
      ? h(
          "ul",
          { class: "list" },
          records.settlements.map((s) =>
            h(
              "li",
              { "data-settlement": s.id },
              h("span", {}, h("strong", {}, s.facility.name), h("br"), h("span", { class: "muted" }, `${localDate(s.settledAt)} · ${s.categoryLabel}`)),
              h("span", { class: "amount" }, `总额 ${yuan(s.totalFen)}`, h("br"), h("span", { class: "muted" }, `个人现金 ${yuan(s.cashFen)}`)),
            ),
          ),
        )
      : h("p", { class: "muted" }, "暂无结算记录"),
  );
  const contributions = h(
    "div",
    { class: "card", id: "contributions" },
    h("h3", {}, "缴费记录"),
    records.contributions.length
      ? h(
          "ul",
          { class: "list" },
          records.contributions.map((c) =>
            h("li", {}, h("span", {}, `${c.year}年 ${c.period}`, h("br"), h("span", { class: "muted" }, localDate(c.paidAt))), h("span", { class: "amount" }, yuan(c.amountFen))),
          ),
        )
      : h("p", { class: "muted" }, link ? "仅显示家人的结算记录" : "暂无缴费记录"),
  );
  const flows = h(
    "div",
    { class: "card", id: "flows" },
    h("h3", {}, "个人账户"),
    records.balanceFen !== null ? h("p", {}, "余额 ", h("strong", { class: "amount", id: "balance" }, yuan(records.balanceFen))) : null,
    records.accountFlows.length
      ? h(
          "ul",
          { class: "list" },
          records.accountFlows.map((f) =>
            h("li", {}, h("span", {}, f.kindLabel, h("br"), h("span", { class: "muted" }, localDate(f.occurredAt))), h("span", { class: "amount" }, yuan(f.amountFen))),
          ),
        )
      : h("p", { class: "muted" }, "暂无账户流水"),
  );
  const sections: Record<Tab, HTMLElement> = { settlements, contributions, flows };
  const labels: [Tab, string][] = [
    ["settlements", "结算"],
    ["contributions", "缴费"],
    ["flows", "个人账户"],
  ];
  const body = h("div", {});
  const show = (tab: Tab): void => {
    // Care mode: everything on one screen, no tabs to find.
    if (app.care) mount(body, settlements, link ? null : flows, link ? null : contributions);
    else mount(body, sections[tab]);
    for (const button of tabs.querySelectorAll("button")) button.setAttribute("aria-pressed", String(button.dataset.tab === tab));
  };
  const tabs = h(
    "div",
    { class: "tabs hide-in-care" },
    labels.map(([tab, label]) => h("button", { "data-tab": tab, "aria-pressed": "false", onclick: () => show(tab) }, label)),
  );
  mount(
    page,
    h("h2", {}, link ? `${link.relativeName}的记录` : "我的记录"),
    link ? h("button", { class: "secondary", onclick: () => app.navigate("#/family") }, "返回我的家人") : null,
    link ? null : tabs,
    body,
    h("p", { class: "muted", id: "records-fetched" }, `数据更新于 ${localTime(records.fetchedAt)}${app.online ? "" : "（离线，显示本机保存的数据）"}`),
  );
  show("settlements");
}
