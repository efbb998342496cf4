#!/usr/bin/env bash
# `make test`: build, run every C++ unit test (ctest), then the reference-parity
# suites (tokenizer, chat templates, forward pass against independent
# implementations from npm) and the end-to-end suites (a real cluster driven
# with the official openai SDK).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/build.sh
echo "[test] C++ unit tests (ctest)"
ctest --preset release -j "$(nproc)" --timeout 300
if [ "${TERN_SKIP_SANITIZERS:-0}" != 1 ]; then
  bash scripts/sanitize.sh
fi
echo "[test] reference-parity and end-to-end suites (node --test)"
export TERN_BUILD_DIR="$root/build/release"
cd tests
node --test --test-concurrency=1 reference/*.test.mjs e2e/*.test.mjs
