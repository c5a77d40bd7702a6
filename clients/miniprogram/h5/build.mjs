// Bundles the H5 twin (src/main.ts, on the SDK in ../src) into api/static/h5/, which is committed so that
// serving needs no Node. Deterministic: the same lock files give byte-identical output, and CI rebuilds
// and compares (scripts/build-h5 --check). Content-hashed names let the server cache them forever.
//
// Code splitting keeps the first load small: the entry has what it takes to log in and show the QR; the
// local replica (RxDB) and the other pages' heavier parts are chunks imported after the QR shows.
//
// Writes: main-<hash>.js, chunk-<hash>.js..., style-<hash>.css, third-party-licenses-<hash>.txt and
// manifest.json naming them and the chunks to preload (read by api/h5.py).
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
// `node build.mjs [OUTDIR]`: OUTDIR (default: the committed api/static/h5) is emptied first.
const outdir = resolve(process.argv[2] ?? resolve(here, "../../../api/static/h5"));

rmSync(outdir, { recursive: true, force: true });
mkdirSync(outdir, { recursive: true });

const result = await build({
  absWorkingDir: here,
  entryPoints: { main: "src/main.ts", style: "src/style.css" },
  outdir,
  entryNames: "[name]-[hash]",
  chunkNames: "chunk-[hash]",
  bundle: true,
  splitting: true,
  minify: true,
  format: "esm",
  platform: "browser",
  target: ["es2020", "chrome90", "safari15"],
  define: { "process.env.NODE_ENV": '"production"', global: "globalThis" },
  legalComments: "none", // the licences go, whole, into third-party-licenses-<hash>.txt
  sourcemap: false,
  metafile: true,
  logLevel: "warning",
});

const outputs = Object.keys(result.metafile.outputs)
  .map((path) => relative(outdir, resolve(here, path)))
  .sort();
const script = outputs.find((name) => name.startsWith("main-") && name.endsWith(".js"));
const stylesheet = outputs.find((name) => name.startsWith("style-") && name.endsWith(".css"));
if (!script || !stylesheet || outputs.some((name) => !/^(main|style|chunk)-[A-Z0-9]+\.(js|css)$/.test(name))) {
  throw new Error(`unexpected esbuild outputs: ${outputs.join(", ")}`);
}

// Every package that contributed code: the innermost node_modules/<name> (or @scope/<name>) of each input.
const packageRoots = new Set();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//);
  if (match) packageRoots.add(match[1]);
}
const licences = [...packageRoots]
  .map((root) => {
    const pkg = JSON.parse(readFileSync(join(here, root, "package.json"), "utf8"));
    const file = readdirSync(join(here, root))
      .sort()
      .find((name) => /^(licen[cs]e|copying)(\.|$)/i.test(name));
    const text = file ? readFileSync(join(here, root, file), "utf8").trim() : `License: ${pkg.license}`;
    return { id: `${pkg.name}@${pkg.version}`, license: pkg.license, text };
  })
  .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
const byText = new Map();
for (const { id, license, text } of licences) {
  if (!byText.has(text)) byText.set(text, []);
  byText.get(text).push(`${id} (${license})`);
}
const licenceText =
  `Third-party software bundled into yibao's H5 page (${outputs.join(", ")}).\n\n` +
  [...byText].map(([text, ids]) => `${"=".repeat(78)}\n${ids.join("\n")}\n\n${text}\n`).join("\n");
const licenceHash = createHash("sha256").update(licenceText).digest("hex").slice(0, 8).toUpperCase();
const licenceName = `third-party-licenses-${licenceHash}.txt`;
writeFileSync(join(outdir, licenceName), licenceText);

// The chunks the entry imports statically: the page names them as modulepreload, so that the browser
// fetches them beside the entry instead of one round trip later (seconds on a slow 3G link).
const entryOutput = Object.entries(result.metafile.outputs).find(([path]) => relative(outdir, resolve(here, path)) === script)[1];
const preload = entryOutput.imports
  .filter((item) => item.kind === "import-statement")
  .map((item) => relative(outdir, resolve(here, item.path)))
  .sort();

const manifest = { files: outputs, licenses: licenceName, preload, script, stylesheet };
writeFileSync(join(outdir, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");

for (const name of readdirSync(outdir).sort()) {
  console.log(`${join(outdir, name)}  ${readFileSync(join(outdir, name)).length} bytes`);
}
