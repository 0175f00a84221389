#!/usr/bin/env bash
# ICHNet on a real GPU: the native wgpu backend (Vulkan) and the page's WebGPU path in headless
# Chromium (WebGPU over Vulkan), on the bundled sample and a 512×512×32 scan, first run (pipeline
# compilation included) and warm, next to the CPU figures of the same run.
#
# Run from the repository root on a machine with a GPU and its Vulkan driver:
#   scripts/gpu-bench.sh            (everything)
#   scripts/gpu-bench.sh native     (the native backends only)
# It installs what it needs (scripts/setup.sh, vulkan-tools) and refuses to report a software
# adapter (lavapipe, llvmpipe, SwiftShader) as a GPU. Results go to stdout and gpu-bench.log.
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
only="${1:-}"
exec > >(tee gpu-bench.log) 2>&1

say() { printf '== %s\n' "$*"; }

scripts/setup.sh
if ! command -v vulkaninfo >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq vulkan-tools >/dev/null
fi

say "Vulkan devices"
devices="$(vulkaninfo --summary 2>/dev/null | grep -E 'deviceName|deviceType' || true)"
printf '%s\n' "$devices"
if ! printf '%s\n' "$devices" | grep -q 'PHYSICAL_DEVICE_TYPE_\(DISCRETE\|INTEGRATED\)_GPU'; then
  echo "no hardware GPU is visible to Vulkan (only software adapters, or none): nothing to measure" >&2
  exit 1
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv

# The crate at opt-level 3, as in --release; dependencies are at 3 in every profile.
export CARGO_PROFILE_DEV_OPT_LEVEL=3
say "native wgpu (Vulkan): the network alone; first run compiles the pipelines, then 3 warm runs"
cargo bench --profile dev --bench net -- --device wgpu --case sample --case clinical --reps 3
say "native CPU (flex, every core) on the same scans, for the ratio"
cargo bench --profile dev --bench net -- --case sample --case clinical --reps 3

[ "$only" = native ] && exit 0

say "the page: WebGPU over Vulkan in headless Chromium"
scripts/build-web.sh
# Chromium's flags for hardware WebGPU without a display: Vulkan through ANGLE, the GPU
# blocklist off (headless runs are often blocklisted). tests/browser/helpers.mjs appends
# ICHNET_CHROMIUM_FLAGS to its launch flags.
export ICHNET_CHROMIUM_FLAGS="--enable-unsafe-webgpu --enable-features=Vulkan,VulkanFromANGLE,DefaultANGLEVulkan --use-angle=vulkan --use-vulkan=native --ignore-gpu-blocklist --disable-vulkan-surface"
node tests/browser/bench.mjs webgpu
say "the page's CPU path on the same scans, for the ratio"
node tests/browser/bench.mjs cpu
