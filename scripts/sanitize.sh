#!/usr/bin/env bash
# The tests that parse untrusted input or juggle threads, built with ASan and
# UBSan (the `asan` preset) and run once. Part of `make test`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
targets=(
  gateway_openai_request_test gateway_http_server_test gateway_api_service_test
  gateway_tokenizer_test gateway_jinja_test gateway_chat_template_test
  worker_safetensors_test worker_engine_test worker_kv_block_manager_test
  worker_scheduler_test worker_executor_test worker_tp_pool_test worker_worker_service_test
  gateway_logprobs_test router_router_service_test router_prefix_index_test
  router_admission_queue_test
)
echo "[sanitize] configuring (build/asan)"
cmake --preset asan >/dev/null
echo "[sanitize] compiling ${#targets[@]} test programs with ASan+UBSan"
cmake --build --preset asan -j "$(nproc)" --target "${targets[@]}"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
failed=0
for t in "${targets[@]}"; do
  if out=$("build/asan/tests/$t" --gtest_brief=1 2>&1); then
    echo "[sanitize] $t: ok"
  else
    echo "$out" | tail -40
    echo "[sanitize] $t: FAILED"
    failed=1
  fi
done
exit "$failed"
