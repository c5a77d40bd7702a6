// Errors the SDK raises. GraphQL errors keep the server's stable `extensions.code` (DESIGN.md section 5)
// and its zh-CN message, which the page may show as it is.

export interface GraphQLErrorShape {
  message: string;
  path?: (string | number)[];
  extensions?: { code?: string; field?: string; reason?: string; [key: string]: unknown };
}

export class YibaoError extends Error {
  readonly code: string;
  readonly field: string | undefined;
  readonly reason: string | undefined;
  readonly errors: GraphQLErrorShape[];
  constructor(code: string, message: string, errors: GraphQLErrorShape[] = []) {
    super(message);
    this.name = "YibaoError";
    this.code = code;
    this.errors = errors;
    const first = errors[0]?.extensions;
    this.field = typeof first?.field === "string" ? first.field : undefined;
    this.reason = typeof first?.reason === "string" ? first.reason : undefined;
  }

  static fromGraphQL(errors: GraphQLErrorShape[]): YibaoError {
    const first = errors[0] ?? { message: "请求失败" };
    return new YibaoError(first.extensions?.code ?? "INTERNAL_SERVER_ERROR", first.message, errors);
  }
}

/** The login is over (refresh token expired, reused or revoked; logged out elsewhere): log in again. */
export class ReloginRequired extends YibaoError {
  constructor(cause?: YibaoError) {
    super("UNAUTHENTICATED", "登录已过期，请重新登录", cause?.errors ?? []);
    this.name = "ReloginRequired";
  }
}

/** The server answered with something other than a GraphQL response (a proxy's 502, an HTML page). */
export class BadResponse extends YibaoError {
  readonly status: number;
  constructor(status: number, message: string) {
    super(status >= 500 || status === 429 ? "UPSTREAM_UNAVAILABLE" : "BAD_REQUEST", message);
    this.name = "BadResponse";
    this.status = status;
  }
}
