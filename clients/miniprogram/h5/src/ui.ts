// A tiny DOM helper: no framework, no innerHTML (the CSP and XSS both want text nodes).
type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | null | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Attrs = {},
  ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2).toLowerCase(), value);
    } else if (name === "class") {
      element.className = String(value);
    } else if (value === true) {
      element.setAttribute(name, "");
    } else {
      element.setAttribute(name, String(value));
    }
  }
  append(element, children);
  return element;
}

function append(parent: Node, children: (Child | Child[])[]): void {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
  }
}

/** Replaces the children of `parent`. */
export function mount(parent: Element, ...children: (Child | Child[])[]): void {
  parent.replaceChildren();
  append(parent, children);
}

/** ¥12.34 from integer fen. */
export function yuan(fen: number): string {
  const sign = fen < 0 ? "-" : "";
  const abs = Math.abs(fen);
  return `${sign}¥${Math.floor(abs / 100)}.${String(abs % 100).padStart(2, "0")}`;
}

/** 2026-11-20 14:05 in China time, from an ISO-8601 UTC string. */
export function localTime(iso: string | null | undefined): string {
  if (!iso) return "";
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const shifted = new Date(date.getTime() + 8 * 3600_000);
  return shifted.toISOString().slice(0, 16).replace("T", " ");
}

export function localDate(iso: string | null | undefined): string {
  return localTime(iso).slice(0, 10);
}

const CHINESE = /[\u4e00-\u9fff]/;

/** The message of an error, for the resident: always Chinese. The server's messages (and the page's
 * own) are zh-CN already and shown as they are; anything else (a proxy's HTTP status, a browser's or
 * RxDB's English) becomes a plain Chinese sentence. */
export function errorText(error: unknown): string {
  const message = String((error as { message?: unknown } | null)?.message ?? error);
  const name = String((error as { name?: unknown } | null)?.name ?? "");
  if (name === "NetworkError" || /fetch|network|timeout|Failed to|offline/i.test(message)) return "网络不可用，请稍后再试";
  const status = Number((error as { status?: unknown } | null)?.status);
  if (name === "BadResponse" && (status >= 500 || status === 429)) return "服务暂时不可用，请稍后再试";
  if (CHINESE.test(message)) return message;
  return "操作没有成功，请稍后再试；如果一直这样，请刷新页面";
}
