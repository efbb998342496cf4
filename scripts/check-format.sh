#!/usr/bin/env bash
# Checks that every C++ source of the tree (.cc/.h known to git, tracked or
# new but not ignored) is formatted as .clang-format says, with Debian's
# clang-format 14; part of `make test`. Generated code (protoc output,
# anything marked "@generated" / "DO NOT EDIT") and tests/node_modules are
# left out. Changes nothing: run `clang-format-14 -i FILE...` to fix.
#
#   scripts/check-format.sh          check; fails listing the files that differ
#   scripts/check-format.sh FILE...  check only these files
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

clang_format="${CLANG_FORMAT:-clang-format-14}"
if ! command -v "$clang_format" >/dev/null; then
  echo "[format] $clang_format is missing; run scripts/install-deps.sh" >&2
  exit 1
fi

files=()
if (($#)); then
  files=("$@")
else
  while IFS= read -r -d '' file; do
    case "$file" in
      */node_modules/* | *.pb.h | *.pb.cc) continue ;;
    esac
    [ -f "$file" ] || continue  # deleted in the work tree, still in the index
    if head -5 "$file" | grep -qiE '@generated|do not edit'; then continue; fi
    files+=("$file")
  done < <(git ls-files -z --cached --others --exclude-standard -- '*.cc' '*.h')
fi

echo "[format] checking ${#files[@]} files with $("$clang_format" --version | sed 's/^.*version //')"
unformatted=()
for file in "${files[@]}"; do
  if ! "$clang_format" --dry-run --Werror "$file" >/dev/null 2>&1; then
    unformatted+=("$file")
  fi
done
if ((${#unformatted[@]})); then
  printf '[format] not formatted: %s\n' "${unformatted[@]}"
  echo "[format] FAILED: ${#unformatted[@]} of ${#files[@]} files differ from .clang-format" \
    "(fix with: $clang_format -i FILE...)"
  exit 1
fi
echo "[format] all ${#files[@]} files are formatted"
