#!/usr/bin/env bash
# Build the web app's engine: the crate compiled to wasm, its JS glue, and a size-optimised module
# in www/pkg/ (gitignored). Installs what is missing, idempotently:
#   - the wasm32-unknown-unknown target (rustup);
#   - wasm-bindgen-cli at exactly the version Cargo.toml pins (a mismatch makes the glue refuse the module);
#   - wasm-opt from the npm package `binaryen` (tests/browser/package.json); Debian's binaryen is
#     too old and produces a broken module.
# Usage: scripts/build-web.sh   (then: ichnet serve, and open the printed URL)
# Env: CARGO_TARGET_DIR (default: target/ in the repo), SKIP_WASM_OPT=1, WASM_OPT_LEVEL (default
# -Oz, chosen by measurement: see the README's Benchmarks), WASM_BUDGET_BYTES (default 15000000).
# Fails when the module after wasm-opt is larger than the budget: 15 MB = 15,000,000 bytes.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

WASM_BINDGEN_VERSION="0.2.130"
WASM_OPT_LEVEL="${WASM_OPT_LEVEL:--Oz}"
WASM_BUDGET_BYTES="${WASM_BUDGET_BYTES:-15000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  rustup target add wasm32-unknown-unknown
fi

if ! wasm-bindgen --version 2>/dev/null | grep -q " ${WASM_BINDGEN_VERSION}\$"; then
  echo "installing wasm-bindgen-cli ${WASM_BINDGEN_VERSION} (takes ~10 minutes once)" >&2
  # Not --locked: the locked build of this version fails to resolve.
  cargo install wasm-bindgen-cli --version "${WASM_BINDGEN_VERSION}"
fi

wasm_opt="$root/tests/browser/node_modules/.bin/wasm-opt"
if [[ "${SKIP_WASM_OPT:-0}" != 1 && ! -x "$wasm_opt" ]]; then
  (cd tests/browser && npm install --no-audit --no-fund)
fi

# The viewer: NiiVue's self-contained ES module (no bare imports, no bundler needed) from npm
# (tests/browser/package.json pins it), with its licence and those of the packages bundled in it.
# Never from a CDN: the page's CSP allows only its own origin, and the service worker caches it.
bash "$root/scripts/copy-niivue.sh"

cargo build --profile wasm-release --lib --target wasm32-unknown-unknown
raw="$CARGO_TARGET_DIR/wasm32-unknown-unknown/wasm-release/ichnet.wasm"

out="www/pkg"
mkdir -p "$out"
wasm-bindgen --target web --no-typescript --out-dir "$out" --out-name ichnet "$raw"

if [[ "${SKIP_WASM_OPT:-0}" != 1 ]]; then
  before=$(stat -c %s "$out/ichnet_bg.wasm")
  # --enable-simd: the module uses simd128 (.cargo/config.toml); without it wasm-opt refuses it.
  opt_flags=("$WASM_OPT_LEVEL" --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int
    --enable-sign-ext --enable-mutable-globals --enable-reference-types --enable-multivalue)
  # wasm-opt (binaryen's JS build) takes 5-25 minutes on a loaded 2-core machine, and its output
  # depends only on its input, its flags and its version: an unchanged module (a CI run after a
  # JS-only change) reuses the last result, kept beside cargo's output.
  cache="$CARGO_TARGET_DIR/wasm-opt-cache"
  key=$( { sha256sum <"$out/ichnet_bg.wasm"; echo "${opt_flags[*]}"; "$wasm_opt" --version; } | sha256sum | cut -c1-64)
  if [[ -f "$cache/$key.wasm" ]]; then
    cp "$cache/$key.wasm" "$out/ichnet_bg.wasm"
    echo "wasm-opt: the module is unchanged since an earlier build; its optimised copy is reused" >&2
  else
    "$wasm_opt" "${opt_flags[@]}" "$out/ichnet_bg.wasm" -o "$out/ichnet_bg.opt.wasm"
    mv "$out/ichnet_bg.opt.wasm" "$out/ichnet_bg.wasm"
    mkdir -p "$cache"
    # Only the latest few: each is ~15 MB.
    # (`|| true` inside: with pipefail, ls of an empty cache would end the script silently.)
    { ls -1t "$cache"/*.wasm 2>/dev/null || true; } | tail -n +4 | xargs -r rm -f
    cp "$out/ichnet_bg.wasm" "$cache/$key.wasm"
  fi
  after=$(stat -c %s "$out/ichnet_bg.wasm")
  echo "wasm-opt ${WASM_OPT_LEVEL}: ${before} -> ${after} bytes" >&2
fi
size=$(stat -c %s "$out/ichnet_bg.wasm")
gz=$(gzip -9 -c "$out/ichnet_bg.wasm" | wc -c)
echo "www/pkg/ichnet_bg.wasm: ${size} bytes ($gz gzipped); budget ${WASM_BUDGET_BYTES} bytes" >&2
# The budget is part of the build: a module over it fails here, not in a benchmark someone may
# never run. Checked after wasm-opt (what the page downloads); SKIP_WASM_OPT=1 skips the check,
# since the unoptimised module is expected to be larger.
if [[ "${SKIP_WASM_OPT:-0}" != 1 && "$size" -gt "$WASM_BUDGET_BYTES" ]]; then
  echo "error: www/pkg/ichnet_bg.wasm is ${size} bytes after wasm-opt, over the budget of ${WASM_BUDGET_BYTES} bytes" >&2
  exit 1
fi

# Pre-compressed copies for `ichnet serve` (and any static server that serves X.gz for X):
# the engine and its glue only, which this build regenerates together with their .gz, so a .gz
# is never older than its file. (The viewer's are made by copy-niivue.sh.)
for f in "$out/ichnet_bg.wasm" "$out/ichnet.js"; do
  gzip -9 -n -c "$f" >"$f.gz"
done
