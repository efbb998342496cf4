#!/usr/bin/env bash
# Installs dependencies (Debian and npm packages) and builds the release preset.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/install-deps.sh
echo "[build] configuring (build/release)"
cmake --preset release >/dev/null
echo "[build] compiling with $(nproc) jobs; progress below"
cmake --build --preset release -j "$(nproc)"
