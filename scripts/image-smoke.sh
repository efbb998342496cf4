#!/usr/bin/env bash
# `make image-smoke`: checks the image `make image` built (default
# localhost/tern:latest; another as $1) by running the demo inside it:
#   1. a working container (buildah from), its configured user non-root and
#      tini as the entrypoint
#   2. `tern model synth --preset tiny` writes the tiny demo model into a
#      temporary folder inside the container, as that user
#   3. `tern up` on it in the background (buildah run --isolation chroot,
#      which shares the host's network) with the gateway on a free port of
#      127.0.0.1; from the host, GET /health until 200 (at most
#      TERN_SMOKE_READY_SECONDS, default 120), then one
#      POST /v1/chat/completions whose choice must have content
#   4. always, also on failure: the cluster is stopped (SIGTERM to `tern up`,
#      which stops its processes, they drain; SIGKILL to whatever is left in
#      the container after 20 s) and the working container removed
# Runs as root (buildah); re-runs itself through sudo otherwise.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  exec sudo --preserve-env=TERN_SMOKE_READY_SECONDS bash "$0" "$@"
fi

image="${1:-localhost/tern:latest}"
ready_seconds="${TERN_SMOKE_READY_SECONDS:-120}"
model_name="tern-smoke"
start_all=$SECONDS
ctr="" root_id="" up_pid="" log=""

say() { echo "[image-smoke] $*"; }
fail() {
  echo "[image-smoke] FAILED: $*" >&2
  if [ -n "$log" ] && [ -s "$log" ]; then
    echo "[image-smoke] tern up's output:" >&2
    tail -n 40 "$log" >&2
  fi
  exit 1
}

# Pids of the processes running inside the working container: those whose
# root directory is its file system (same device and inode as its mount;
# buildah run enters it through a bind mount of its own).
container_pids() {
  local p
  [ -n "$root_id" ] || return 0
  for p in /proc/[0-9]*; do
    if [ "$(stat -L -c '%d:%i' "$p/root/" 2>/dev/null)" = "$root_id" ]; then echo "${p#/proc/}"; fi
  done
}

# The pid of `tern up` among them.
tern_up_pid() {
  local p
  for p in $(container_pids); do
    if tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -Eq '^([^ ]*/)?tern up '; then echo "$p"; fi
  done
}

# Stops the cluster and removes the working container; the EXIT trap.
# SIGTERM goes to `tern up` (once it runs: buildah may still be starting it),
# which stops its gateway, router and workers (they drain); when `tern up` is
# gone, to whatever is left in the container. Done when the buildah run has
# exited and nothing runs in the container; after 20 s everything left is
# killed.
cleanup() {
  local status=$? pids=() up=() waited=0
  set +e
  if [ -n "$up_pid" ] || [ -n "$(container_pids)" ]; then
    say "stopping the cluster"
    while true; do
      mapfile -t pids < <(container_pids)
      if ((${#pids[@]} == 0)) && ! { [ -n "$up_pid" ] && kill -0 "$up_pid" 2>/dev/null; }; then break; fi
      if ((waited >= 20)); then
        say "still running after 20 s, killing: ${pids[*]} $up_pid"
        kill -KILL "${pids[@]}" $up_pid 2>/dev/null
        break
      fi
      if ((${#up[@]} == 0)); then
        mapfile -t up < <(tern_up_pid)
        if ((${#up[@]})); then
          kill -TERM "${up[@]}" 2>/dev/null
        elif ((${#pids[@]})) && ! kill -0 "$up_pid" 2>/dev/null; then
          kill -TERM "${pids[@]}" 2>/dev/null
        fi
      fi
      sleep 1
      waited=$((waited + 1))
    done
    [ -z "$up_pid" ] || wait "$up_pid" 2>/dev/null
    say "stopped in $waited s"
  fi
  if [ -n "$ctr" ]; then buildah rm "$ctr" >/dev/null; fi
  [ -z "$log" ] || rm -f "$log"
  if [ "$status" -eq 0 ]; then
    say "passed in $((SECONDS - start_all)) s"
  fi
  exit "$status"
}

trap cleanup EXIT

# A TCP port of 127.0.0.1 nothing listens on, from a random start.
free_port() {
  local port tries
  for ((tries = 0; tries < 200; tries++)); do
    port=$((20000 + RANDOM % 20000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  fail "no free port found"
}

# --- 1. the working container ----------------------------------------------
t=$SECONDS
buildah inspect --type image "$image" >/dev/null 2>&1 || fail "$image is not in local storage (run: make image)"
ctr="$(buildah from --pull=never --quiet "$image")"
root_id="$(stat -c '%d:%i' "$(buildah mount "$ctr")/")"
user="$(buildah inspect --format '{{.OCIv1.Config.User}}' "$ctr")"
entrypoint="$(buildah inspect --format '{{.OCIv1.Config.Entrypoint}}' "$ctr")"
case "${user%%:*}" in
  "" | 0 | root) fail "the image runs as root (User: '$user')" ;;
esac
[ "$entrypoint" = "[/usr/bin/tini --]" ] || fail "the entrypoint is $entrypoint, not tini"
# inside ARGS...: runs ARGS in the container as the image's user.
inside() { buildah run --isolation chroot --user "$user" "$ctr" -- "$@"; }
uid="$(inside id -u)"
[ "$uid" != 0 ] || fail "the container's user is root"
say "container $ctr from $image (user $user, uid $uid; entrypoint tini) in $((SECONDS - t)) s"

# --- 2. the tiny demo model ----------------------------------------------------
t=$SECONDS
model="$(inside mktemp -d /tmp/tern-smoke.XXXXXX)/model"
say "tern model synth --preset tiny --out $model"
inside tern model synth --preset tiny --out "$model" | sed 's/^/  /'
say "model written in $((SECONDS - t)) s"

# --- 3. the cluster and one request -----------------------------------------
t=$SECONDS
port="$(free_port)"
log="$(mktemp /tmp/tern-smoke-up.XXXXXX.log)"
say "tern up --model $model --port $port --host 127.0.0.1 (in the background)"
buildah run --isolation chroot --user "$user" "$ctr" -- \
  tern up --model "$model" --port "$port" --host 127.0.0.1 --workers 1 \
  --served-model-name "$model_name" >"$log" 2>&1 &
up_pid=$!

say "waiting for GET http://127.0.0.1:$port/health (at most $ready_seconds s)"
until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/health" || true)" = 200 ]; do
  kill -0 "$up_pid" 2>/dev/null || fail "tern up exited before the gateway was healthy"
  ((SECONDS - t < ready_seconds)) || fail "the gateway was not healthy after $ready_seconds s"
  sleep 1
done
say "gateway healthy after $((SECONDS - t)) s"

t=$SECONDS
say "POST /v1/chat/completions"
response="$(curl -sS --max-time 120 "http://127.0.0.1:$port/v1/chat/completions" \
  -H 'Content-Type: application/json' \
  -d "{\"model\": \"$model_name\", \"messages\": [{\"role\": \"user\", \"content\": \"Hello!\"}],
       \"max_tokens\": 16, \"ignore_eos\": true, \"seed\": 1}")" ||
  fail "the request failed"
# A choice whose message has non-empty content (the demo model's random
# weights make it gibberish).
if ! grep -q '"choices" *: *\[ *{' <<<"$response" ||
  ! grep -Eq '"content" *: *"([^"\\]|\\.)+"' <<<"$response"; then
  fail "no choice with content in the response: $response"
fi
say "answered in $((SECONDS - t)) s: ${response:0:300}"
