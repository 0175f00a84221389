#!/usr/bin/env bash
# Every test, from a fresh machine: installs what is missing, then format, lints, native tests,
# the wasm build and the browser tests in a real (headless) Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"   # quiets the Vulkan loader on headless machines
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TARGET_DIR="$TARGET_DIR"

step() { printf '\n== %s\n' "$*"; }

step "setup";          bash scripts/setup.sh
step "format";         cargo fmt --check
step "clippy (native)"; cargo clippy --all-targets -- -D warnings
step "clippy (wasm32)"; cargo clippy --lib --target wasm32-unknown-unknown -- -D warnings
step "native tests";   cargo test
step "wasm build";     bash scripts/build-web.sh
step "browser tests";  ICHNET_BIN="$TARGET_DIR/debug/ichnet" node --test tests/browser/
