#!/usr/bin/env bash
# Put the viewer into www/niivue/ (gitignored): NiiVue's self-contained ES module from the npm
# package pinned in tests/browser/package.json, a gzipped copy for `ichnet serve`, and
# LICENSE.txt: NiiVue's BSD-2 licence (third_party/niivue/LICENSE: the npm package carries none)
# followed by the licences of the packages bundled into its module (from its build's metafile).
# Called by scripts/build-web.sh; quick, so it also runs on its own after `npm ci`.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
pkg="$root/tests/browser/node_modules/@niivue/niivue"
if [[ ! -f "$pkg/dist/index.js" ]]; then
  (cd "$root/tests/browser" && { npm ci --no-audit --no-fund || npm install --no-audit --no-fund; })
fi
out="$root/www/niivue"
mkdir -p "$out"
cp "$pkg/dist/index.js" "$out/niivue.js"
gzip -9 -n -c "$out/niivue.js" >"$out/niivue.js.gz"
node - "$pkg" "$root/third_party/niivue/LICENSE" "$out/LICENSE.txt" <<'JS'
const fs = require("node:fs");
const path = require("node:path");
const [pkgDir, niivueLicense, outFile] = process.argv.slice(2);
const version = JSON.parse(fs.readFileSync(path.join(pkgDir, "package.json"), "utf8")).version;
const parts = [`NiiVue ${version} (www/niivue/niivue.js, from the npm package @niivue/niivue)\n\n${fs.readFileSync(niivueLicense, "utf8")}`];
const meta = JSON.parse(fs.readFileSync(path.join(pkgDir, "dist/metafile-esm.json"), "utf8"));
const bundled = new Set();
for (const input of Object.keys(meta.inputs)) {
  const m = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)/);
  if (m) bundled.add(m[1]);
}
const modules = path.resolve(pkgDir, "../..");
for (const name of [...bundled].sort()) {
  const dir = [path.join(pkgDir, "node_modules", name), path.join(modules, name)].find((d) => fs.existsSync(d));
  if (!dir) throw new Error(`${name} (bundled in NiiVue) is not installed: its licence cannot be shipped`);
  const p = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
  const file = fs.readdirSync(dir).find((f) => /^licen[cs]e/i.test(f));
  const text = file ? fs.readFileSync(path.join(dir, file), "utf8") : `${p.license} (as its package.json says; the package carries no licence file)\n`;
  parts.push(`${"-".repeat(78)}\nBundled in niivue.js: ${name} ${p.version}, ${p.license}\n\n${text}`);
}
fs.writeFileSync(outFile, parts.join("\n"));
JS
echo "www/niivue/niivue.js: NiiVue $(node -p "require('$pkg/package.json').version") $(stat -c %s "$out/niivue.js") bytes, licences in www/niivue/LICENSE.txt" >&2
