#!/usr/bin/env bash
# `make test`: build, run every C++ unit test (ctest), the same test programs
# under ASan+UBSan (sanitize.sh; its TSan stage runs on demand), the
# libFuzzer targets for a bounded time (fuzz.sh), the formatting check
# (check-format.sh), then the reference-parity suites (tokenizer, chat
# templates, forward pass against independent implementations from npm) and
# the end-to-end suites (a real cluster driven with the official openai SDK).
#
#   TERN_SKIP_SANITIZERS=1  skip sanitize.sh
#   TERN_SKIP_FUZZ=1        skip fuzz.sh (TERN_FUZZ_SECONDS sets its time per target)
#   TERN_SKIP_FORMAT=1      skip check-format.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# stage NAME COMMAND...: runs one stage and reports its duration.
stage() {
  local name=$1 start=$SECONDS
  shift
  echo "[test] $name"
  "$@"
  echo "[test] $name: done in $((SECONDS - start)) s"
}

bash scripts/build.sh
stage "C++ unit tests (ctest)" ctest --preset release -j "$(nproc)" --timeout 300
if [ "${TERN_SKIP_SANITIZERS:-0}" != 1 ]; then
  stage "sanitizers (ASan+UBSan: every test program)" \
    bash scripts/sanitize.sh
fi
if [ "${TERN_SKIP_FUZZ:-0}" != 1 ]; then
  stage "fuzzing (tests/fuzz, ${TERN_FUZZ_SECONDS:-60} s per target)" bash scripts/fuzz.sh
fi
if [ "${TERN_SKIP_FORMAT:-0}" != 1 ]; then
  stage "formatting (clang-format 14)" bash scripts/check-format.sh
fi
echo "[test] reference-parity and end-to-end suites (node --test)"
export TERN_BUILD_DIR="$root/build/release"
cd tests
node --test --test-concurrency=1 reference/*.test.mjs e2e/*.test.mjs
