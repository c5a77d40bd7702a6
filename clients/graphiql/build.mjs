// Bundles GraphiQL (src/graphiql.jsx) into api/static/graphiql/, which is committed so that serving
// needs no Node. Deterministic: the same lock file gives byte-identical output, and CI rebuilds and
// compares (scripts/build-graphiql, then git diff). Content-hashed names let the server cache them forever.
//
// Writes: graphiql-<hash>.js, graphiql-<hash>.css, third-party-licenses-<hash>.txt (the licence of
// every package in the bundle) and manifest.json naming them (read by api/graphiql.py).
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
// `node build.mjs [OUTDIR]`: OUTDIR (default: the committed api/static/graphiql) is emptied first.
const outdir = resolve(process.argv[2] ?? resolve(here, "../../api/static/graphiql"));

rmSync(outdir, { recursive: true, force: true });
mkdirSync(outdir, { recursive: true });

const result = await build({
  absWorkingDir: here,
  entryPoints: { graphiql: "src/graphiql.jsx" },
  outdir,
  entryNames: "[name]-[hash]",
  bundle: true,
  minify: true,
  format: "iife",
  platform: "browser",
  target: ["es2020", "chrome90", "firefox90", "safari15"],
  jsx: "automatic",
  define: { "process.env.NODE_ENV": '"production"' },
  legalComments: "none", // the licences go, whole, into third-party-licenses-<hash>.txt
  sourcemap: false,
  metafile: true,
  logLevel: "warning",
});

const outputs = Object.keys(result.metafile.outputs).map((path) => relative(outdir, resolve(here, path)));
const script = outputs.find((name) => name.endsWith(".js"));
const stylesheet = outputs.find((name) => name.endsWith(".css"));
if (!script || !stylesheet || outputs.length !== 2) {
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
// Packages whose licence text is the same (word for word) share one copy of it.
const byText = new Map();
for (const { id, license, text } of licences) {
  if (!byText.has(text)) byText.set(text, []);
  byText.get(text).push(`${id} (${license})`);
}
const licenceText =
  "Third-party software bundled into yibao's GraphiQL (" + `${script}, ${stylesheet}).\n\n` +
  [...byText]
    .map(([text, ids]) => `${"=".repeat(78)}\n${ids.join("\n")}\n\n${text}\n`)
    .join("\n");
const licenceHash = createHash("sha256").update(licenceText).digest("hex").slice(0, 8).toUpperCase();
const licenceName = `third-party-licenses-${licenceHash}.txt`;
writeFileSync(join(outdir, licenceName), licenceText);

const manifest = { licenses: licenceName, script, stylesheet };
writeFileSync(join(outdir, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");

for (const name of readdirSync(outdir).sort()) {
  console.log(`${join(outdir, name)}  ${readFileSync(join(outdir, name)).length} bytes`);
}
