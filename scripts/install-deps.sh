#!/usr/bin/env bash
# Installs what tern needs to build and test on Debian 12: the Debian packages
# below (only those missing) and the pinned npm packages under tests/.
# Idempotent and quiet when everything is already there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

debian_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev libgrpc-dev
  libabsl-dev libboost-dev libyaml-cpp-dev nlohmann-json3-dev libxxhash-dev libpcre2-dev
  prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  curl ca-certificates
)

missing=()
for p in "${debian_packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ! command -v node >/dev/null 2>&1; then missing+=(nodejs npm); fi

if ((${#missing[@]})); then
  echo "[deps] installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# npm packages for the reference and end-to-end suites, pinned by tests/package-lock.json.
if [ "${TERN_SKIP_NPM:-0}" != 1 ]; then
  stamp="$root/tests/node_modules/.tern-lock-stamp"
  if [ ! -f "$stamp" ] || ! cmp -s "$stamp" "$root/tests/package-lock.json"; then
    echo "[deps] installing npm packages (tests/package-lock.json)"
    (cd "$root/tests" && npm install --omit=optional --no-audit --no-fund --progress=true --loglevel=http)
    cp "$root/tests/package-lock.json" "$stamp"
  fi
fi
