#!/usr/bin/env bash
# The C++ test programs under the sanitizers; part of `make test`.
#
#   1. ASan + UBSan (`asan` preset): every test program. The list is CMake's
#      (TERN_TEST_PROGRAMS, written to build/asan/tern_test_programs.txt), so
#      a new tern_test() is covered without touching this script; leaks in
#      Debian's system libraries are suppressed by tests/lsan.supp.
#   2. TSan (`tsan` preset): the test programs labelled `threaded` in
#      tests/**/CMakeLists.txt (build/tsan/tern_threaded_test_programs.txt),
#      with tests/tsan.supp for races inside Debian's uninstrumented gRPC and
#      protobuf, and tests/tsan_annotations.cc preloaded so that TSan sees
#      the ordering of Debian's (uninstrumented) absl::Mutex and of gRPC's
#      batches (see that file).
#
# Each program runs once, whole (one process, not one per test case), one
# after the other: the router and worker tests bound how long an engine step
# may take, and sanitized programs running side by side on two cores miss
# those bounds. A failure prints the end of the program's log.
#
#   TERN_SANITIZE_STAGES   "asan tsan" (the default), or one of them
#   TERN_SANITIZE_JOBS     test programs run at a time (default 1)
#   TERN_SANITIZE_TIMEOUT  seconds one test program may take (default 900)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

stages="${TERN_SANITIZE_STAGES:-asan tsan}"
parallel="${TERN_SANITIZE_JOBS:-1}"
program_timeout="${TERN_SANITIZE_TIMEOUT:-900}"
program_env=()  # VAR=value settings for the test programs of the current stage

# only_library_frames LOG: true when LOG's first sanitizer report (an ASan or
# UBSan "ERROR:", a TSan "WARNING:") has a first stack with no frame of ours
# (our sources are compiled with paths relative to the build folder,
# "../../router/..."): an error inside Debian's uninstrumented gRPC or
# protobuf, where a rare race of theirs can surface.
only_library_frames() {
  awk '/(ERROR|WARNING): (Address|Thread|UndefinedBehavior)Sanitizer/ { in_report = 1; next }
       in_report && /^ *#[0-9]+ / {
         seen = 1
         if ($0 ~ /[ (]\.\.\/\.\.\/(common|kernels|worker|router|gateway|cli|proto|tests)\//) ours = 1
         next
       }
       in_report && seen { exit }
       END { exit !(seen && !ours) }' "$1"
}

# crashed_in_grpc LOG: true when the program died inside Debian's gRPC (a
# sanitizer's SEGV report whose frame #0 is in libgrpc, or gRPC's own
# "prior > 0" reference-count assertion): the teardown race of gRPC 1.51 that
# test.sh's ctest stage also runs again (see there). Its first report can
# name our frames, when the memory it corrupted was ours by then (seen once
# under TSan in gateway_generation_test: a use-after-free in a tokenizer
# parse, then the SEGV in grpc_slice_buffer_reset_and_unref).
crashed_in_grpc() {
  grep -Eq '^SUMMARY: [A-Za-z]+Sanitizer: SEGV \([^)]*libgrpc[^)]*\)|ref_counted\.h:[0-9]+\].*prior > 0' "$1"
}

# run_program STAGE TARGET PATH LOG_DIR: one test program; leaves
# LOG_DIR/TARGET.log and, on failure, LOG_DIR/TARGET.failed. A program
# whose failure is a report inside library code only (only_library_frames)
# or a crash inside gRPC (crashed_in_grpc) runs once more; it passes if that
# run is clean, and both logs are kept (TARGET.log, TARGET.first.log) and the
# first report is printed.
run_program() {
  local stage=$1 target=$2 path=$3 log_dir=$4
  local log="$log_dir/$target.log" start=$SECONDS rc=0
  run_once "$path" "$log" || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && { only_library_frames "$log" || crashed_in_grpc "$log"; }; then
    mv "$log" "$log_dir/$target.first.log"
    echo "[sanitize] $stage: $target: a report inside library code only, or a crash inside gRPC; running it again:"
    grep -m 1 -A 12 -E '(ERROR|WARNING): .*Sanitizer' "$log_dir/$target.first.log" | sed 's/^/    /'
    rc=0
    run_once "$path" "$log" || rc=$?
  fi
  if [ "$rc" -eq 0 ]; then
    echo "[sanitize] $stage: $target ok ($((SECONDS - start)) s)"
  else
    [ "$rc" -eq 124 ] && echo "(timed out after $program_timeout s)" >>"$log"
    echo "[sanitize] $stage: $target FAILED (exit $rc, $((SECONDS - start)) s)"
    touch "$log_dir/$target.failed"
  fi
}

# run_once PATH LOG: the program once, output to LOG; its exit status.
run_once() {
  timeout --kill-after=30 "$program_timeout" env "${program_env[@]}" "$1" --gtest_brief=1 \
    </dev/null >"$2" 2>&1
}

# run_stage STAGE LIST: runs the programs of LIST ("target path" lines);
# fails when any of them fails.
run_stage() {
  local stage=$1 list=$2
  local log_dir="build/$stage/sanitize-logs"
  rm -rf "$log_dir"
  mkdir -p "$log_dir"
  local count
  count=$(grep -c . "$list" || true)
  echo "[sanitize] $stage: running $count test programs, $parallel at a time (logs: $log_dir)"
  while read -r target path; do
    while (($(jobs -rp | wc -l) >= parallel)); do wait -n || true; done
    run_program "$stage" "$target" "$path" "$log_dir" &
  done <"$list"
  wait
  local failed=()
  for marker in "$log_dir"/*.failed; do
    [ -e "$marker" ] || continue
    local target
    target=$(basename "$marker" .failed)
    failed+=("$target")
    echo "[sanitize] $stage: ---- $target (last 60 lines of $log_dir/$target.log) ----"
    tail -60 "$log_dir/$target.log"
    grep -m 20 'SUMMARY: .*Sanitizer' "$log_dir/$target.log" | sed "s/^/[sanitize] $stage: $target: /" || true
  done
  if ((${#failed[@]})); then
    echo "[sanitize] $stage: FAILED: ${failed[*]}"
    return 1
  fi
  echo "[sanitize] $stage: all $count test programs passed"
}

# build_stage PRESET TARGET: configures and builds one preset's programs.
build_stage() {
  local preset=$1 target=$2 start=$SECONDS
  echo "[sanitize] $preset: configuring (build/$preset)"
  cmake --preset "$preset" >/dev/null
  echo "[sanitize] $preset: compiling $target with $(nproc) jobs"
  cmake --build --preset "$preset" -j "$(nproc)" --target "$target"
  echo "[sanitize] $preset: built in $((SECONDS - start)) s"
}

status=0
for stage in $stages; do
  case "$stage" in
    asan)
      build_stage asan tern_test_programs
      program_env=(ASAN_OPTIONS=detect_leaks=1:check_initialization_order=1
        "LSAN_OPTIONS=suppressions=$root/tests/lsan.supp"
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1)
      run_stage asan build/asan/tern_test_programs.txt || status=1
      ;;
    tsan)
      build_stage tsan tern_threaded_test_programs
      shim=build/tsan/libtern_tsan_annotations.so
      if [ ! -f "$shim" ] || [ tests/tsan_annotations.cc -nt "$shim" ]; then
        echo "[sanitize] tsan: compiling the abseil/gRPC annotations ($shim)"
        c++ -std=c++20 -O1 -g -shared -fPIC tests/tsan_annotations.cc -o "$shim"
      fi
      # TSan's defaults otherwise: every report is printed and a program
      # with any report exits with 66 at the end.
      program_env=("TSAN_OPTIONS=suppressions=$root/tests/tsan.supp:second_deadlock_stack=1:history_size=4"
        "LD_PRELOAD=$root/$shim")
      run_stage tsan build/tsan/tern_threaded_test_programs.txt || status=1
      ;;
    *)
      echo "[sanitize] unknown stage '$stage' (asan, tsan)" >&2
      exit 2
      ;;
  esac
done
exit "$status"
