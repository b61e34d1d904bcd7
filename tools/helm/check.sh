#!/usr/bin/env bash
# The chart checks CI runs: helm lint (strict) and helm template for the
# default values and every scenario in helm/streamsink/ci/*.yaml, then each
# rendering validated against the Kubernetes schemas twice over:
#   kubernetes-validate --strict  JSON schemas of the built-in kinds, for the
#                                 oldest and newest Kubernetes the chart targets
#   manifest-check                strict decoding of every object, custom
#                                 resources (ServiceMonitor, ScaledObject,
#                                 TriggerAuthentication) included
# A kind that neither checker knows fails the run. Installs the tools first
# (tools/helm/install.sh). Prints one line per scenario and a closing summary.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CHART="$ROOT/helm/streamsink"
# The chart's kubeVersion floor and the newest schemas kubernetes-validate ships.
KUBE_VERSIONS=(1.27.0 1.37.0)
# Custom resources: kubernetes-validate has no schema for them; manifest-check decodes them.
CRD_KINDS="ScaledObject ServiceMonitor TriggerAuthentication"

eval "$(bash "$ROOT/tools/helm/install.sh" "$@")"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
passed=0
failed=0

scenarios=("default")
for f in "$CHART"/ci/*.yaml; do scenarios+=("$f"); done

for scenario in "${scenarios[@]}"; do
  name=$(basename "$scenario" .yaml)
  values=()
  [[ "$scenario" != default ]] && values=(-f "$scenario")
  ok=1
  log="$out/$name.log"
  : >"$log"
  "$HELM" lint --strict "$CHART" "${values[@]}" --kube-version "${KUBE_VERSIONS[0]}" >>"$log" 2>&1 || ok=0
  for kv in "${KUBE_VERSIONS[@]}"; do
    rendered="$out/$name-$kv.yaml"
    if ! "$HELM" template streamsink "$CHART" "${values[@]}" --namespace streamsink --kube-version "$kv" >"$rendered" 2>>"$log"; then
      ok=0
      continue
    fi
    if ! "$KUBERNETES_VALIDATE" --strict --quiet -k "$kv" "$rendered" >>"$log" 2>&1; then ok=0; fi
    # A WARN is a kind without a schema: allowed only for the custom resources.
    while read -r kind; do
      [[ " $CRD_KINDS " == *" $kind "* ]] || { echo "no schema for kind $kind" >>"$log"; ok=0; }
    done < <(grep -o "Couldn't find schema for kind [A-Za-z]*" "$log" | awk '{print $NF}' | sort -u)
    "$MANIFEST_CHECK" "$rendered" >>"$log" 2>&1 || ok=0
  done
  if ((ok)); then
    echo "chart check: $name: ok ($(grep -c '^kind:' "$out/$name-${KUBE_VERSIONS[0]}.yaml") objects)"
    passed=$((passed + 1))
  else
    echo "chart check: $name: FAILED"
    sed 's/^/    /' "$log"
    failed=$((failed + 1))
  fi
done

echo "chart checks: $passed passed, $failed failed"
((failed == 0))
