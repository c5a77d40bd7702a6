// 我的记录: settlements, contributions and personal-account flows from the local replica (RxDB, synced
// live), mine or a linked relative's (?link=ID, with the read-records permission: the server replicates
// a relative's records only while the link grants it, and removes them when it no longer does).
import type { App } from "./app";
import { type Doc, replicaFor } from "./replica";
import { h, localDate, mount, yuan } from "./ui";

type Tab = "settlements" | "contributions" | "flows";

const num = (doc: Doc, field: string): number => Number(doc[field] ?? 0);
const str = (doc: Doc, field: string): string => String(doc[field] ?? "");

export async function recordsPage(app: App, page: HTMLElement, params: URLSearchParams): Promise<void> {
  const linkId = params.get("link");
  mount(page, h("h2", {}, "我的记录"), h("p", { class: "loading" }, "正在读取…"));
  const replica = await replicaFor(app.sdk, app.me!.id);
  const empty = (await replica.records(app.me!.id)).settlements.length === 0;
  if (empty) await replica.ready(app.online);
  let tab: Tab = "settlements";
  let gone = false;

  const draw = async (): Promise<void> => {
    const link = linkId ? (await replica.familyLinks()).find((doc) => doc.id === linkId) : undefined;
    const personId = linkId ? str(link ?? ({} as Doc), "relativePersonId") : app.me!.id;
    const records = personId ? await replica.records(personId) : { settlements: [], contributions: [], accountFlows: [] };
    if (gone) return;
    // Care mode: the latest few of each, on one screen; the standard page lists more, by tab.
    const shown = app.care ? 10 : 100;
    const title = link ? `${str(link, "relativeName")}的记录` : "我的记录";
    const settlements = h(
      "div",
      { class: "card", id: "settlements" },
      h("h3", {}, "就医结算"),
      records.settlements.length
        ? h(
            "ul",
            { class: "list" },
            records.settlements.slice(0, shown).map((s) =>
              h(
                "li",
                { "data-settlement": s.id },
                h("span", {}, h("strong", {}, str(s, "facilityName")), h("br"), h("span", { class: "muted" }, `${localDate(str(s, "settledAt"))} · ${str(s, "categoryLabel")}`)),
                h("span", { class: "amount" }, `总额 ${yuan(num(s, "totalFen"))}`, h("br"), h("span", { class: "muted" }, `个人现金 ${yuan(num(s, "cashFen"))}`)),
              ),
            ),
          )
        : h("p", { class: "muted" }, linkId && !link ? "没有查看TA记录的权限，或关联已解除" : "暂无结算记录"),
    );
    const contributions = h(
      "div",
      { class: "card", id: "contributions" },
      h("h3", {}, "缴费记录"),
      records.contributions.length
        ? h(
            "ul",
            { class: "list" },
            records.contributions.slice(0, shown).map((c) =>
              h("li", {}, h("span", {}, `${str(c, "year")}年 ${str(c, "period")}`, h("br"), h("span", { class: "muted" }, localDate(str(c, "paidAt")))), h("span", { class: "amount" }, yuan(num(c, "amountFen")))),
            ),
          )
        : h("p", { class: "muted" }, "暂无缴费记录"),
    );
    const latest = records.accountFlows[0];
    const flows = h(
      "div",
      { class: "card", id: "flows" },
      h("h3", {}, "个人账户"),
      latest ? h("p", {}, "余额 ", h("strong", { class: "amount", id: "balance" }, yuan(num(latest, "balanceAfterFen")))) : null,
      records.accountFlows.length
        ? h(
            "ul",
            { class: "list" },
            records.accountFlows.slice(0, shown).map((f) =>
              h("li", {}, h("span", {}, str(f, "kindLabel"), h("br"), h("span", { class: "muted" }, localDate(str(f, "occurredAt")))), h("span", { class: "amount" }, yuan(num(f, "amountFen")))),
            ),
          )
        : h("p", { class: "muted" }, "暂无账户流水（城乡居民医保没有个人账户）"),
    );
    const sections: Record<Tab, HTMLElement> = { settlements, contributions, flows };
    const tabs = h(
      "div",
      { class: "tabs hide-in-care" },
      ([
        ["settlements", "结算"],
        ["contributions", "缴费"],
        ["flows", "个人账户"],
      ] as [Tab, string][]).map(([code, label]) =>
        h("button", { "data-tab": code, "aria-pressed": String(code === tab), onclick: () => ((tab = code), void draw()) }, label),
      ),
    );
    mount(
      page,
      h("h2", {}, title),
      link ? h("button", { class: "secondary", onclick: () => app.navigate("#/family") }, "返回我的家人") : null,
      tabs,
      // Care mode: everything on one screen, no tabs to find.
      app.care ? [settlements, flows, contributions] : sections[tab],
      h("p", { class: "muted", id: "records-count" }, `本机已保存 ${records.settlements.length} 条结算记录${app.online ? "，随时自动更新" : "（当前离线）"}`),
    );
  };
  const stop = replica.watch(["settlements", "contributions", "accountflows", "familylinks"], () => void draw());
  app.onLeave(() => {
    gone = true;
    stop();
  });
  await draw();
}
