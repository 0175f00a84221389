#!/usr/bin/env bash
# Installs everything the build, the tests and the page need, skipping what is already there.
# Safe to run again and again; used by scripts/run.sh, scripts/test.sh and CI.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '== %s\n' "$*"; }

# Debian packages: Chromium + its driver for the browser tests, lavapipe so native wgpu has a
# (software) Vulkan device on machines without a GPU; dcm2niix, the oracle of tests/dicom.rs.
need_apt=()
for pkg in chromium chromium-driver mesa-vulkan-drivers dcm2niix; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  say "apt-get install ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# Python: pydicom + highdicom check the DICOM SEG output in tests/dicom.rs.
if ! python3 -c "import pydicom, highdicom, numpy" >/dev/null 2>&1; then
  say "pip install pydicom highdicom numpy"
  python3 -m pip install --quiet pydicom highdicom numpy
fi

# Rust: the wasm target and the lint/format components.
rustup target list --installed | grep -qx wasm32-unknown-unknown || {
  say "rustup target add wasm32-unknown-unknown"; rustup target add wasm32-unknown-unknown; }
for comp in clippy rustfmt; do
  rustup component list --installed | grep -q "^$comp" || rustup component add "$comp"
done

# wasm-bindgen-cli must match the wasm-bindgen crate pinned in Cargo.toml exactly.
WB_VERSION=0.2.130
if ! wasm-bindgen --version 2>/dev/null | grep -q " $WB_VERSION\$"; then
  say "cargo install wasm-bindgen-cli $WB_VERSION (about 10 minutes, once)"
  cargo install wasm-bindgen-cli --version "$WB_VERSION"
fi

# npm: playwright-core (drives the system Chromium) and binaryen (wasm-opt; Debian's is too old).
if [ ! -d tests/browser/node_modules/playwright-core ] || [ ! -d tests/browser/node_modules/binaryen ]; then
  say "npm ci (tests/browser)"
  (cd tests/browser && { npm ci --no-audit --no-fund || npm install --no-audit --no-fund; })
fi
say "setup done"
