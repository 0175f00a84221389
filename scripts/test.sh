#!/usr/bin/env bash
# Every test, from a fresh machine: installs what is missing, then format, lints, native tests,
# the wasm build and the browser tests in a real (headless) Chromium.
#
# Cold-machine plan (2 cores; CI has 90 minutes and may start with no cargo cache): burn is the
# bulk of every build, and each separate `cargo clippy` pass would compile all of it once more in
# check mode (one pass per target). Instead clippy is the compiler of our own crate inside the
# two real builds: RUSTC_WORKSPACE_WRAPPER=clippy-driver with CLIPPY_ARGS is how `cargo clippy`
# itself drives it, so every lint runs with -D warnings on every target (native: lib, bin, tests,
# benches; wasm32: the lib) while each dependency is compiled once per target. The wasm build
# starts in the background at once and overlaps the native build and tests: one cargo build alone
# leaves a core idle for much of its tail.
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"   # quiets the Vulkan loader on headless machines
TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TARGET_DIR="$TARGET_DIR"

step() { printf '\n== %s (at %d s)\n' "$*" "$SECONDS"; }

step "setup";  bash scripts/setup.sh
step "format"; cargo fmt --check

RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver)"
export RUSTC_WORKSPACE_WRAPPER
export CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"

wasm_log="$(mktemp)"
step "wasm build with clippy (wasm32), in the background: $wasm_log"
# Its own process group (setsid), so that stopping it stops cargo and rustc too.
setsid bash scripts/build-web.sh >"$wasm_log" 2>&1 &
wasm_pid=$!
# Whatever happens below, the background build does not outlive this script.
trap 'kill -- "-$wasm_pid" 2>/dev/null || true' EXIT

step "native build with clippy (all targets)"
cargo test --all-targets --no-run
step "native tests"
cargo test

step "wasm build (waiting for it)"
if ! wait "$wasm_pid"; then
  cat "$wasm_log"
  echo "the wasm build (or its clippy lints, or its size budget) failed" >&2
  exit 1
fi
cat "$wasm_log"
trap - EXIT

step "browser tests"
ICHNET_BIN="$TARGET_DIR/debug/ichnet" node --test tests/browser/
step "all checks passed"
