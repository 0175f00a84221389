#!/usr/bin/env bash
# Everything a fresh machine needs to open the app: installs what is missing, builds the wasm
# engine and the native server, then serves www/ (with the bundled sample) on 127.0.0.1.
# Usage: scripts/run.sh [--port 8080]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build-web.sh
# The server is a small static file server: the dev profile (dependencies optimised anyway) saves
# a second full native build of burn on a fresh machine.
exec cargo run --bin ichnet -- serve "$@"
