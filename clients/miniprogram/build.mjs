// Builds the SDK (src/*.ts) into dist/, which is committed so that a mini-program project (or a page)
// can use it without Node. Deterministic: the same lock file gives byte-identical output.
//   node build.mjs           regenerate src/operations.generated.ts from graphql/operations/, write dist/
//   node build.mjs --check   build in memory and fail if dist/ or the generated file differ (CI)
//
// dist/yibao-sdk.js          client, transports, storage adapters, offline voucher (with @noble/curves)
// dist/yibao-replication.js  RxDB database + replicateGraphQL wiring (with rxdb and graphql-ws); `ws` is
//                            replaced by the platform's WebSocket (src/ws-shim.ts), so it runs in a
//                            browser, and in Node 22+ (or 20 with --experimental-websocket)
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

import { generateOperations } from "./codegen.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const check = process.argv.includes("--check");
const outdir = join(here, "dist");
const generatedPath = join(here, "src", "operations.generated.ts");

const generated = generateOperations(resolve(here, "../../graphql/operations"));
const expected = new Map([[generatedPath, generated]]);
if (!check) writeFileSync(generatedPath, generated);

const entryPoints = { "yibao-sdk": "src/index.ts" };
if (existsSync(join(here, "src", "replication.ts"))) entryPoints["yibao-replication"] = "src/replication.ts";

const result = await build({
  absWorkingDir: here,
  entryPoints,
  outdir,
  bundle: true,
  format: "esm",
  platform: "neutral",
  mainFields: ["module", "main"],
  conditions: ["import", "module", "default"],
  target: ["es2020"],
  alias: { ws: "./src/ws-shim.ts" },
  define: { "process.env.NODE_ENV": '"production"' },
  minify: true,
  legalComments: "eof",
  sourcemap: false,
  write: false,
  logLevel: "warning",
});
for (const file of result.outputFiles) expected.set(file.path, file.text);

if (check) {
  const problems = [];
  for (const [path, text] of expected) {
    if (!existsSync(path)) problems.push(`missing ${relative(here, path)}`);
    else if (readFileSync(path, "utf8") !== text) problems.push(`differs: ${relative(here, path)}`);
  }
  for (const name of existsSync(outdir) ? readdirSync(outdir) : []) {
    if (!expected.has(join(outdir, name))) problems.push(`not built: dist/${name}`);
  }
  if (problems.length) {
    console.error(problems.join("\n"));
    console.error("clients/miniprogram/dist is not what its sources build: run scripts/build-miniprogram and commit");
    process.exit(1);
  }
  console.log("clients/miniprogram/dist matches a fresh build");
} else {
  rmSync(outdir, { recursive: true, force: true });
  mkdirSync(outdir, { recursive: true });
  for (const file of result.outputFiles) writeFileSync(file.path, file.contents);
  for (const name of readdirSync(outdir).sort()) {
    console.log(`dist/${name}  ${readFileSync(join(outdir, name)).length} bytes`);
  }
}
