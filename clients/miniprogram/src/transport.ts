// HTTP transports: the SDK speaks to the backend through one of these, so the same client runs in a
// WeChat mini-program (wx.request) and in a browser or Node (fetch). A transport only moves bytes: it
// never retries and never looks at GraphQL; YibaoClient decides what is safe to send again.

export interface TransportRequest {
  /** A path on the backend (`/graphql`) or an absolute URL. */
  url: string;
  method: "GET" | "POST";
  headers: Record<string, string>;
  body?: string;
  /** Give up after this long: the request fails with a NetworkError of kind `timeout`. */
  timeoutMs?: number;
}

export interface TransportResponse {
  status: number;
  /** Header names in lower case. */
  headers: Record<string, string>;
  body: string;
}

export interface Transport {
  request(request: TransportRequest): Promise<TransportResponse>;
}

export type NetworkErrorKind = "timeout" | "network";

/** No answer came: the request may or may not have reached the server. */
export class NetworkError extends Error {
  readonly kind: NetworkErrorKind;
  constructor(kind: NetworkErrorKind, message: string) {
    super(message);
    this.name = "NetworkError";
    this.kind = kind;
  }
}

export const DEFAULT_TIMEOUT_MS = 15_000;

export function resolveUrl(baseUrl: string, url: string): string {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(url)) return url;
  return baseUrl.replace(/\/+$/, "") + "/" + url.replace(/^\/+/, "");
}

type FetchLike = (input: string, init: Record<string, unknown>) => Promise<{
  status: number;
  headers: { forEach(callback: (value: string, key: string) => void): void };
  text(): Promise<string>;
}>;

/** A transport over `fetch` (browsers, Node 18+), with a timeout through AbortController. */
export function createFetchTransport(baseUrl: string, fetchImpl?: FetchLike): Transport {
  const doFetch: FetchLike = fetchImpl ?? ((input, init) => (globalThis.fetch as unknown as FetchLike)(input, init));
  return {
    async request({ url, method, headers, body, timeoutMs = DEFAULT_TIMEOUT_MS }) {
      const controller = new AbortController();
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        controller.abort();
      }, timeoutMs);
      try {
        const response = await doFetch(resolveUrl(baseUrl, url), {
          method,
          headers,
          body,
          signal: controller.signal,
        });
        const text = await response.text();
        const lowered: Record<string, string> = {};
        response.headers.forEach((value, key) => {
          lowered[key.toLowerCase()] = value;
        });
        return { status: response.status, headers: lowered, body: text };
      } catch (error) {
        if (timedOut) throw new NetworkError("timeout", `request timed out after ${timeoutMs} ms`);
        throw new NetworkError("network", error instanceof Error ? error.message : String(error));
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

/** The part of the mini-program's `wx` object that the SDK uses (wx.request, as documented by WeChat). */
export interface WxRequestOptions {
  url: string;
  method: string;
  header: Record<string, string>;
  data?: string;
  timeout: number;
  dataType: string;
  responseType: string;
  success(result: { statusCode: number; header: Record<string, string>; data: unknown }): void;
  fail(error: { errMsg: string; errno?: number }): void;
}

export interface WxLike {
  request(options: WxRequestOptions): unknown;
}

/** A transport over `wx.request`. `dataType: "text"` keeps wx from parsing the JSON itself, so both
 * transports hand the client the same bytes. */
export function createWxTransport(baseUrl: string, wx: WxLike): Transport {
  return {
    request({ url, method, headers, body, timeoutMs = DEFAULT_TIMEOUT_MS }) {
      return new Promise((resolve, reject) => {
        wx.request({
          url: resolveUrl(baseUrl, url),
          method,
          header: headers,
          data: body,
          timeout: timeoutMs,
          dataType: "text",
          responseType: "text",
          success(result) {
            const lowered: Record<string, string> = {};
            for (const [key, value] of Object.entries(result.header ?? {})) lowered[key.toLowerCase()] = String(value);
            const data = result.data;
            const text = typeof data === "string" ? data : data == null ? "" : JSON.stringify(data);
            resolve({ status: result.statusCode, headers: lowered, body: text });
          },
          fail(error) {
            const message = error?.errMsg ?? "request:fail";
            reject(new NetworkError(/timeout/i.test(message) ? "timeout" : "network", message));
          },
        });
      });
    },
  };
}
