// The yibao mini-program SDK: see clients/miniprogram/README.md.
export * from "./errors.js";
export * from "./transport.js";
export * from "./storage.js";
export * from "./client.js";
export * from "./random.js";
export * from "./types.js";
export * from "./voucher.js";
export { OPERATIONS } from "./operations.generated.js";
export type { OperationName } from "./operations.generated.js";
